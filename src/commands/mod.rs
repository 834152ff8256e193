//! One module per subcommand: parse its flags, call the libraries.

pub(crate) mod api;
pub(crate) mod collect;
pub(crate) mod consume;
pub(crate) mod dev;
pub(crate) mod dlq;
pub(crate) mod keys;
pub(crate) mod migrate;
pub(crate) mod partitions;
pub(crate) mod produce;
pub(crate) mod retention;
pub(crate) mod rollups;
pub(crate) mod token;
