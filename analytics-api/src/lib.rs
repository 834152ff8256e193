//! The analytics API: the four `/api/v1/analytics/*` endpoints over PostgreSQL.
//!
//! Empty until the analytics issue lands; the crate exists so the workspace
//! has the layout the design card names.
