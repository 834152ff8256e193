-- Unique users of a set of sketches in one aggregate, without repacking.
--
-- The API counted a group's users as hll_cardinality(hll_union_agg(users)):
-- hll_union_agg() unions the sketches into the extension's unpacked state,
-- packs it into an hll value at the end (hll_pack), and hll_cardinality()
-- unpacks that value again to count it. Each unpacked state is the
-- extension's full 128 kB structure, so for the small groups of a time
-- series (one to four sketches per interval) the packing and unpacking cost
-- more than the union: 91 groups of one dense day sketch took 14-20 ms.
--
-- activity_unique_users() has the same transition function and counts the
-- unpacked state directly (hll_card_unpacked, the extension's own function
-- for it): the same estimate (compared on 30,015 groups of hour, day and
-- quarter-hour sketches: none differed), NULL over no rows as before, and
-- the 91 groups took 7.4 ms.
CREATE AGGREGATE activity_unique_users(hll) (
    SFUNC = hll_union_trans,
    STYPE = internal,
    FINALFUNC = hll_card_unpacked
);
