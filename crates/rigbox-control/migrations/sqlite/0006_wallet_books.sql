-- The wallet writer keeps each user's sum of open holds in memory (app/wallet.rs), so the
-- per-user index of open holds no longer pays for the B-tree it writes at every reserve and
-- settle. The rare reads of that sum (loading a user's books, GET /users/me/credits) scan the
-- open holds through ai_holds_open_age, which holds only the requests in flight.
DROP INDEX ai_holds_open;
