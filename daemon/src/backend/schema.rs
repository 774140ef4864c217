//! The PostgreSQL schema and its versioned migrations.
//!
//! `corral_schema` holds one row per migration applied. Every node runs [`migrate`] at
//! start, in one transaction under `pg_advisory_xact_lock(MIGRATION_LOCK)`: nodes
//! starting together wait for each other, and the second finds the work done. A database
//! whose schema is newer than this code refuses the node (it would not know the tables).

use tokio_postgres::Client;

/// Schema version this code writes and reads: one per migration.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Advisory lock key taken by migrations (`corral` in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_7272_616c;

/// Migration N (index N-1): the statements that take the schema from N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: queues, counters, locks with fencing tokens from one sequence, nodes.
    "CREATE TABLE corral_queue_items (
         id bigserial PRIMARY KEY,
         queue text NOT NULL,
         value text NOT NULL
     );
     CREATE INDEX corral_queue_items_queue ON corral_queue_items (queue, id);
     CREATE TABLE corral_counters (
         name text PRIMARY KEY,
         value bigint NOT NULL
     );
     CREATE SEQUENCE corral_fencing;
     CREATE TABLE corral_locks (
         name text PRIMARY KEY,
         node text NOT NULL,
         conn bigint NOT NULL,
         pid integer,
         uid integer,
         token bigint NOT NULL,
         acquired_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE INDEX corral_locks_holder ON corral_locks (node, conn);
     CREATE TABLE corral_nodes (
         name text PRIMARY KEY,
         heartbeat timestamptz NOT NULL,
         lease_ms bigint NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now()
     );",
    // 2: each lock's line of waiters, across the nodes (FIFO by id).
    "CREATE TABLE corral_lock_waiters (
         id bigserial PRIMARY KEY,
         name text NOT NULL,
         node text NOT NULL,
         conn bigint NOT NULL,
         since timestamptz NOT NULL DEFAULT now()
     );
     CREATE INDEX corral_lock_waiters_name ON corral_lock_waiters (name, id);
     CREATE INDEX corral_lock_waiters_node ON corral_lock_waiters (node);",
    // 3: pool jobs across nodes (see `backend::pool`). An item is `pending`, `running`
    // (claimed by `node` for attempt `attempt`) or `done` (its `result`); the partial
    // indexes hold only pending and running items, so a recorded item leaves the claim
    // path and only its result row remains.
    "CREATE TABLE corral_pool_jobs (
         id bigserial PRIMARY KEY,
         name text,
         spec text NOT NULL,
         total integer NOT NULL,
         workers integer NOT NULL,
         retries integer NOT NULL,
         state text NOT NULL DEFAULT 'running',
         submitted_by text NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now(),
         finished_at timestamptz
     );
     CREATE INDEX corral_pool_jobs_running ON corral_pool_jobs (id) WHERE state = 'running';
     CREATE TABLE corral_pool_items (
         job bigint NOT NULL REFERENCES corral_pool_jobs (id) ON DELETE CASCADE,
         idx integer NOT NULL,
         input text NOT NULL,
         state text NOT NULL DEFAULT 'pending',
         node text,
         attempt integer NOT NULL DEFAULT 0,
         failures integer NOT NULL DEFAULT 0,
         ok boolean,
         exit_code integer,
         result text,
         claimed_at timestamptz,
         finished_at timestamptz,
         PRIMARY KEY (job, idx)
     );
     CREATE INDEX corral_pool_items_pending ON corral_pool_items (job, idx) WHERE state = 'pending';
     CREATE INDEX corral_pool_items_running ON corral_pool_items (node, job) WHERE state = 'running';
     CREATE INDEX corral_pool_items_running_job ON corral_pool_items (job) WHERE state = 'running';",
    // 4: counters' compare-and-swap (one function, so the read and the write are one
    // statement under the row's lock) and fixed-length arrays: one row per array (its
    // kind, `i64` or `f64`, and length) and one per element (`i` or `f` by kind), so an
    // element's add is one row's update whatever the array's length.
    "CREATE FUNCTION corral_counter_cas(n text, expected bigint, replacement bigint,
                                        OUT swapped boolean, OUT val bigint)
     LANGUAGE plpgsql AS $$
     BEGIN
         LOOP
             SELECT value INTO val FROM corral_counters WHERE name = n FOR UPDATE;
             IF FOUND THEN
                 swapped := val = expected;
                 IF swapped THEN
                     UPDATE corral_counters SET value = replacement WHERE name = n;
                     val := replacement;
                 END IF;
                 RETURN;
             END IF;
             -- A counter never set is 0.
             IF expected <> 0 THEN
                 swapped := false;
                 val := 0;
                 RETURN;
             END IF;
             INSERT INTO corral_counters (name, value) VALUES (n, replacement)
             ON CONFLICT (name) DO NOTHING;
             IF FOUND THEN
                 swapped := true;
                 val := replacement;
                 RETURN;
             END IF;
             -- Another node created it meanwhile: look again, under its lock.
         END LOOP;
     END $$;
     CREATE TABLE corral_arrays (
         name text PRIMARY KEY,
         kind text NOT NULL CHECK (kind IN ('i64', 'f64')),
         length integer NOT NULL
     );
     CREATE TABLE corral_array_items (
         name text NOT NULL REFERENCES corral_arrays (name) ON DELETE CASCADE,
         idx integer NOT NULL,
         i bigint,
         f double precision,
         PRIMARY KEY (name, idx)
     );
     -- Creates array n (elements from ivals or fvals, by kind) unless it exists; with
     -- `overwrite`, an existing array of the same shape takes the values. Returns the
     -- shape found or made and whether the values were written.
     CREATE FUNCTION corral_array_create(n text, k text, len integer, ivals bigint[],
                                         fvals double precision[], overwrite boolean,
                                         OUT kind text, OUT length integer, OUT written boolean)
     LANGUAGE plpgsql AS $$
     BEGIN
         LOOP
             SELECT a.kind, a.length INTO kind, length FROM corral_arrays a
             WHERE a.name = n FOR UPDATE;
             IF FOUND THEN
                 written := overwrite AND kind = k AND length = len;
                 IF written THEN
                     UPDATE corral_array_items t SET i = v.i, f = v.f
                     FROM unnest(ivals, fvals) WITH ORDINALITY AS v(i, f, o)
                     WHERE t.name = n AND t.idx = v.o - 1;
                 END IF;
                 RETURN;
             END IF;
             INSERT INTO corral_arrays (name, kind, length) VALUES (n, k, len)
             ON CONFLICT (name) DO NOTHING;
             IF FOUND THEN
                 INSERT INTO corral_array_items (name, idx, i, f)
                 SELECT n, v.o - 1, v.i, v.f
                 FROM unnest(ivals, fvals) WITH ORDINALITY AS v(i, f, o);
                 kind := k;
                 length := len;
                 written := true;
                 RETURN;
             END IF;
         END LOOP;
     END $$;",
    // 5: acknowledged gets and declared queues. A leased item stays in
    // `corral_queue_items` with its lease (id from `corral_leases`, never reused), holder
    // (node, connection; no connection when detached) and deadline; returning it clears
    // the lease, so it is waiting again at its place (its id). `corral_queues` holds what
    // `queue declare` said. The functions keep each operation one statement: a bounded
    // put counts under the queue row's lock; a return moves poison to the dead-letter
    // queue; an ack or nack of several leases is all or nothing. They notify the channel
    // `corral` (`q:QUEUE` an item is waiting, `p:QUEUE` a bounded queue has room).
    "ALTER TABLE corral_queue_items
         ADD COLUMN deliveries integer NOT NULL DEFAULT 0,
         ADD COLUMN lease bigint,
         ADD COLUMN lease_node text,
         ADD COLUMN lease_conn bigint,
         ADD COLUMN lease_until timestamptz;
     CREATE UNIQUE INDEX corral_queue_items_lease ON corral_queue_items (lease)
         WHERE lease IS NOT NULL;
     CREATE INDEX corral_queue_items_waiting ON corral_queue_items (queue, id)
         WHERE lease IS NULL;
     CREATE INDEX corral_queue_items_leased_by ON corral_queue_items (lease_node, lease_conn)
         WHERE lease IS NOT NULL;
     CREATE INDEX corral_queue_items_lease_until ON corral_queue_items (lease_until)
         WHERE lease IS NOT NULL;
     CREATE SEQUENCE corral_leases;
     CREATE TABLE corral_queues (
         name text PRIMARY KEY,
         maxsize integer,
         max_deliveries integer,
         dead_letter text
     );
     -- Puts v on q unless q is bounded and full (then -1); else the waiting depth.
     CREATE FUNCTION corral_queue_put(q text, v text) RETURNS bigint
     LANGUAGE plpgsql AS $$
     DECLARE
         m integer;
     BEGIN
         SELECT maxsize INTO m FROM corral_queues WHERE name = q AND maxsize IS NOT NULL
         FOR UPDATE;
         IF m IS NOT NULL
            AND (SELECT count(*) FROM corral_queue_items WHERE queue = q) >= m THEN
             RETURN -1;
         END IF;
         INSERT INTO corral_queue_items (queue, value) VALUES (q, v);
         PERFORM pg_notify('corral', 'q:' || q);
         RETURN (SELECT count(*) FROM corral_queue_items WHERE queue = q AND lease IS NULL);
     END $$;
     -- The ids of up to n waiting items of q, oldest first, skipping those another
     -- statement holds, and only as many as fit in max_bytes (at least one); they stay
     -- locked for the caller.
     CREATE FUNCTION corral_queue_pick(q text, n integer, max_bytes bigint)
         RETURNS SETOF bigint
     LANGUAGE sql AS $$
         WITH c AS (
             SELECT i.id, octet_length(i.value) AS len FROM corral_queue_items i
             WHERE i.queue = q AND i.lease IS NULL
             ORDER BY i.id FOR UPDATE SKIP LOCKED LIMIT n)
         SELECT x.id FROM (
             SELECT c.id, sum(c.len) OVER (ORDER BY c.id) AS run,
                    row_number() OVER (ORDER BY c.id) AS nth
             FROM c) x
         WHERE x.nth = 1 OR x.run <= max_bytes
     $$;
     -- Takes up to n waiting items of q (at most max_bytes of them, at least one), oldest
     -- first, at most once across nodes.
     CREATE FUNCTION corral_queue_take(q text, n integer, max_bytes bigint)
         RETURNS TABLE (item bigint, val text)
     LANGUAGE plpgsql AS $$
     BEGIN
         RETURN QUERY
             DELETE FROM corral_queue_items
             WHERE id IN (SELECT corral_queue_pick(q, n, max_bytes))
             RETURNING id, value;
         IF FOUND AND EXISTS (SELECT 1 FROM corral_queues
                              WHERE name = q AND maxsize IS NOT NULL) THEN
             PERFORM pg_notify('corral', 'p:' || q);
         END IF;
     END $$;
     -- Ends the given leases without an ack: each item waits again at its place, or
     -- goes to the dead-letter queue once delivered max_deliveries times.
     CREATE FUNCTION corral_queue_return(leases bigint[]) RETURNS integer
     LANGUAGE plpgsql AS $$
     DECLARE
         r record;
         n integer := 0;
     BEGIN
         FOR r IN
             SELECT i.id, i.queue, i.value, i.deliveries, c.max_deliveries,
                    coalesce(c.dead_letter, i.queue || '.dead') AS dead
             FROM corral_queue_items i LEFT JOIN corral_queues c ON c.name = i.queue
             WHERE i.lease = ANY(leases) ORDER BY i.id FOR UPDATE OF i
         LOOP
             n := n + 1;
             IF r.max_deliveries IS NOT NULL AND r.deliveries >= r.max_deliveries THEN
                 DELETE FROM corral_queue_items WHERE id = r.id;
                 INSERT INTO corral_queue_items (queue, value) VALUES (r.dead, r.value);
                 PERFORM pg_notify('corral', 'q:' || r.dead);
                 PERFORM pg_notify('corral', 'p:' || r.queue);
             ELSE
                 UPDATE corral_queue_items
                 SET lease = NULL, lease_node = NULL, lease_conn = NULL, lease_until = NULL
                 WHERE id = r.id;
                 PERFORM pg_notify('corral', 'q:' || r.queue);
             END IF;
         END LOOP;
         RETURN n;
     END $$;
     -- Leases up to n waiting items of q (at most max_bytes) for vis_ms to (node, conn), oldest first, after
     -- returning q's expired leases and moving waiting poison to the dead-letter queue.
     CREATE FUNCTION corral_queue_lease(q text, n integer, node text, conn bigint,
                                        vis_ms bigint, max_bytes bigint)
         RETURNS TABLE (item bigint, val text, lease_id bigint, delivered integer)
     LANGUAGE plpgsql AS $$
     DECLARE
         m integer;
         dead text;
     BEGIN
         PERFORM corral_queue_return(ARRAY(
             SELECT i.lease FROM corral_queue_items i
             WHERE i.queue = q AND i.lease IS NOT NULL AND i.lease_until < now()));
         SELECT c.max_deliveries, coalesce(c.dead_letter, q || '.dead') INTO m, dead
         FROM corral_queues c WHERE c.name = q;
         IF m IS NOT NULL THEN
             WITH poison AS (
                 DELETE FROM corral_queue_items i
                 WHERE i.queue = q AND i.lease IS NULL AND i.deliveries >= m
                 RETURNING i.id, i.value)
             INSERT INTO corral_queue_items (queue, value)
             SELECT dead, p.value FROM poison p ORDER BY p.id;
             IF FOUND THEN
                 PERFORM pg_notify('corral', 'q:' || dead);
             END IF;
         END IF;
         RETURN QUERY
             UPDATE corral_queue_items i
             SET lease = nextval('corral_leases'), lease_node = node, lease_conn = conn,
                 lease_until = now() + vis_ms * interval '1 millisecond',
                 deliveries = i.deliveries + 1
             WHERE i.id IN (SELECT corral_queue_pick(q, n, max_bytes))
             RETURNING i.id, i.value, i.lease, i.deliveries;
     END $$;
     -- Acks (removes) or nacks (returns) every lease of q in `leases`, or none: returns
     -- the ids that are not held (then nothing changed).
     CREATE FUNCTION corral_queue_ack(q text, leases bigint[], nack boolean)
         RETURNS bigint[]
     LANGUAGE plpgsql AS $$
     DECLARE
         wanted bigint[] := ARRAY(SELECT DISTINCT x FROM unnest(leases) x);
         held bigint[];
         missing bigint[];
     BEGIN
         PERFORM 1 FROM corral_queue_items i WHERE i.queue = q AND i.lease = ANY(wanted)
         FOR UPDATE;
         held := ARRAY(SELECT i.lease FROM corral_queue_items i
                       WHERE i.queue = q AND i.lease = ANY(wanted));
         missing := ARRAY(SELECT x FROM unnest(wanted) x WHERE x <> ALL(held) ORDER BY x);
         IF cardinality(missing) > 0 THEN
             RETURN missing;
         END IF;
         IF nack THEN
             PERFORM corral_queue_return(wanted);
         ELSE
             DELETE FROM corral_queue_items i WHERE i.queue = q AND i.lease = ANY(wanted);
             IF EXISTS (SELECT 1 FROM corral_queues
                        WHERE name = q AND maxsize IS NOT NULL) THEN
                 PERFORM pg_notify('corral', 'p:' || q);
             END IF;
         END IF;
         RETURN missing;
     END $$;",
    // 6: semaphores (free permits, bound) with their line of waiters across the nodes
    // (FIFO by id; a release hands its permit to the first waiter, `granted`, instead of
    // the free count, as on SQLite) and events. The functions keep each acquire, release
    // and leaving of the line one statement under the semaphore's row lock, and notify
    // `s:NAME` when a waiter may go.
    "CREATE TABLE corral_semaphores (
         name text PRIMARY KEY,
         value bigint NOT NULL CHECK (value >= 0),
         bound bigint
     );
     CREATE TABLE corral_semaphore_waiters (
         id bigserial PRIMARY KEY,
         name text NOT NULL,
         node text NOT NULL,
         conn bigint NOT NULL,
         granted boolean NOT NULL DEFAULT false,
         since timestamptz NOT NULL DEFAULT now()
     );
     CREATE INDEX corral_semaphore_waiters_name ON corral_semaphore_waiters (name, id);
     CREATE INDEX corral_semaphore_waiters_node ON corral_semaphore_waiters (node);
     CREATE TABLE corral_events (
         name text PRIMARY KEY,
         is_set boolean NOT NULL
     );
     -- Takes a permit of n: a newcomer (place NULL) only with none in line; a waiter at
     -- `place` once granted one, or when first in line with a permit free. status is
     -- 'ok' (val: free permits after), 'none' (no permit yet) or 'missing'.
     CREATE FUNCTION corral_semaphore_acquire(n text, place bigint,
                                              OUT status text, OUT val bigint)
     LANGUAGE plpgsql AS $$
     BEGIN
         SELECT s.value INTO val FROM corral_semaphores s WHERE s.name = n FOR UPDATE;
         IF NOT FOUND THEN
             status := 'missing';
             RETURN;
         END IF;
         status := 'ok';
         IF place IS NOT NULL THEN
             DELETE FROM corral_semaphore_waiters w WHERE w.id = place AND w.granted;
             IF FOUND THEN
                 RETURN;
             END IF;
         END IF;
         IF val > 0 AND NOT EXISTS (
             SELECT 1 FROM corral_semaphore_waiters w
             WHERE w.name = n AND (place IS NULL OR w.id < place)) THEN
             UPDATE corral_semaphores s SET value = s.value - 1 WHERE s.name = n
             RETURNING s.value INTO val;
             DELETE FROM corral_semaphore_waiters w WHERE w.id = place;
             RETURN;
         END IF;
         status := 'none';
     END $$;
     -- Gives one permit to the first waiter in line not yet granted one, else to the free
     -- count. status is 'ok' (val: free permits after), 'missing', 'bound' (val: the free
     -- permits, at the bound) or 'full' (no more fits).
     CREATE FUNCTION corral_semaphore_release(n text, OUT status text, OUT val bigint)
     LANGUAGE plpgsql AS $$
     DECLARE
         b bigint;
         w bigint;
     BEGIN
         SELECT s.value, s.bound INTO val, b FROM corral_semaphores s WHERE s.name = n
         FOR UPDATE;
         IF NOT FOUND THEN
             status := 'missing';
             RETURN;
         END IF;
         UPDATE corral_semaphore_waiters SET granted = true
         WHERE id = (SELECT x.id FROM corral_semaphore_waiters x
                     WHERE x.name = n AND NOT x.granted ORDER BY x.id LIMIT 1)
         RETURNING id INTO w;
         IF w IS NOT NULL THEN
             PERFORM pg_notify('corral', 's:' || n);
             status := 'ok';
             RETURN;
         END IF;
         IF b IS NOT NULL AND val >= b THEN
             status := 'bound';
             RETURN;
         END IF;
         IF val = 9223372036854775807 THEN
             status := 'full';
             RETURN;
         END IF;
         UPDATE corral_semaphores s SET value = s.value + 1 WHERE s.name = n
         RETURNING s.value INTO val;
         PERFORM pg_notify('corral', 's:' || n);
         status := 'ok';
     END $$;
     -- Takes the given places out of their lines; a permit granted to one and not taken
     -- goes to the next waiter (or the free count). Returns how many places were left.
     CREATE FUNCTION corral_semaphore_leave(places bigint[]) RETURNS integer
     LANGUAGE plpgsql AS $$
     DECLARE
         r record;
         n integer := 0;
         g boolean;
     BEGIN
         -- The semaphore's row is locked first, as by acquire and release.
         FOR r IN SELECT w.id, w.name FROM corral_semaphore_waiters w
                  WHERE w.id = ANY(places) ORDER BY w.id
         LOOP
             PERFORM 1 FROM corral_semaphores s WHERE s.name = r.name FOR UPDATE;
             DELETE FROM corral_semaphore_waiters w WHERE w.id = r.id
             RETURNING w.granted INTO g;
             IF FOUND THEN
                 n := n + 1;
                 IF g THEN
                     PERFORM corral_semaphore_release(r.name);
                 END IF;
                 PERFORM pg_notify('corral', 's:' || r.name);
             END IF;
         END LOOP;
         RETURN n;
     END $$;
     -- Deletes semaphore n and its line; its waiters are told (they find it missing).
     CREATE FUNCTION corral_semaphore_delete(n text) RETURNS integer
     LANGUAGE plpgsql AS $$
     DECLARE
         removed integer;
     BEGIN
         DELETE FROM corral_semaphores s WHERE s.name = n;
         GET DIAGNOSTICS removed = ROW_COUNT;
         DELETE FROM corral_semaphore_waiters w WHERE w.name = n;
         PERFORM pg_notify('corral', 's:' || n);
         RETURN removed;
     END $$;",
    // 7: anonymous sessions. A session's row is locked by every hold, add and release,
    // so the last holder to go (on whatever node) is the one that sees none left and
    // deletes the session's objects, as their delete operations do.
    "CREATE TABLE corral_anon_sessions (
         session text PRIMARY KEY
     );
     CREATE TABLE corral_anon_holders (
         session text NOT NULL REFERENCES corral_anon_sessions (session) ON DELETE CASCADE,
         node text NOT NULL,
         conn bigint NOT NULL,
         pid integer,
         start_time bigint,
         PRIMARY KEY (session, node, conn)
     );
     CREATE INDEX corral_anon_holders_conn ON corral_anon_holders (node, conn);
     CREATE TABLE corral_anon_objects (
         session text NOT NULL REFERENCES corral_anon_sessions (session) ON DELETE CASCADE,
         kind text NOT NULL,
         name text NOT NULL,
         PRIMARY KEY (session, kind, name)
     );
     -- Holds session s for (nd, c), a process (p, st) or a connection (p NULL).
     CREATE FUNCTION corral_anon_hold(s text, nd text, c bigint, p integer, st bigint,
                                      OUT holders bigint, OUT objects bigint)
     LANGUAGE plpgsql AS $$
     BEGIN
         INSERT INTO corral_anon_sessions (session) VALUES (s) ON CONFLICT DO NOTHING;
         PERFORM 1 FROM corral_anon_sessions x WHERE x.session = s FOR UPDATE;
         INSERT INTO corral_anon_holders (session, node, conn, pid, start_time)
         VALUES (s, nd, c, p, st) ON CONFLICT DO NOTHING;
         holders := (SELECT count(*) FROM corral_anon_holders h WHERE h.session = s);
         objects := (SELECT count(*) FROM corral_anon_objects o WHERE o.session = s);
     END $$;
     -- Ties object (k, n) to session s; holders is 0 (and nothing changed) when nobody
     -- holds it.
     CREATE FUNCTION corral_anon_add(s text, k text, n text,
                                     OUT holders bigint, OUT objects bigint)
     LANGUAGE plpgsql AS $$
     BEGIN
         PERFORM 1 FROM corral_anon_sessions x WHERE x.session = s FOR UPDATE;
         holders := (SELECT count(*) FROM corral_anon_holders h WHERE h.session = s);
         IF holders > 0 THEN
             INSERT INTO corral_anon_objects (session, kind, name) VALUES (s, k, n)
             ON CONFLICT DO NOTHING;
         END IF;
         objects := (SELECT count(*) FROM corral_anon_objects o WHERE o.session = s);
     END $$;
     -- Deletes one object as its delete operation does (waiters are told).
     CREATE FUNCTION corral_anon_delete_object(k text, n text) RETURNS void
     LANGUAGE plpgsql AS $$
     BEGIN
         CASE k
             WHEN 'queue' THEN
                 DELETE FROM corral_queue_items WHERE queue = n;
                 DELETE FROM corral_queues WHERE name = n;
                 PERFORM pg_notify('corral', 'd:' || n);
             WHEN 'counter' THEN
                 DELETE FROM corral_counters WHERE name = n;
             WHEN 'array' THEN
                 DELETE FROM corral_arrays WHERE name = n;
             WHEN 'semaphore' THEN
                 PERFORM corral_semaphore_delete(n);
             WHEN 'event' THEN
                 DELETE FROM corral_events WHERE name = n;
                 PERFORM pg_notify('corral', 'd:e:' || n);
             ELSE
                 NULL;
         END CASE;
     END $$;
     -- Ends the holds of connection c of node nd (every hold of nd when c is NULL);
     -- each session left without a holder ends with its objects. Returns how many ended.
     CREATE FUNCTION corral_anon_release(nd text, c bigint) RETURNS integer
     LANGUAGE plpgsql AS $$
     DECLARE
         s text;
         o record;
         ended integer := 0;
     BEGIN
         FOR s IN SELECT DISTINCT h.session FROM corral_anon_holders h
                  WHERE h.node = nd AND (c IS NULL OR h.conn = c) ORDER BY 1
         LOOP
             PERFORM 1 FROM corral_anon_sessions x WHERE x.session = s FOR UPDATE;
             DELETE FROM corral_anon_holders h
             WHERE h.session = s AND h.node = nd AND (c IS NULL OR h.conn = c);
             IF NOT EXISTS (SELECT 1 FROM corral_anon_holders h WHERE h.session = s) THEN
                 FOR o IN SELECT a.kind, a.name FROM corral_anon_objects a
                          WHERE a.session = s ORDER BY a.kind, a.name
                 LOOP
                     PERFORM corral_anon_delete_object(o.kind, o.name);
                 END LOOP;
                 DELETE FROM corral_anon_sessions x WHERE x.session = s;
                 ended := ended + 1;
             END IF;
         END LOOP;
         RETURN ended;
     END $$;",
];

/// Why [`migrate`] refused.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was migrated by newer code.
    #[error(
        "the database's corral schema is version {found}, newer than this corrald's ({SCHEMA_VERSION}): upgrade corrald on this node to the version the other nodes run"
    )]
    TooNew {
        /// Version found in the database.
        found: i32,
    },
    /// A statement failed.
    #[error("schema migration failed")]
    Sql(#[from] tokio_postgres::Error),
}

/// Brings the schema to [`SCHEMA_VERSION`] (in one transaction, under the migration
/// lock); returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS corral_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM corral_schema", &[])
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew { found });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO corral_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL backend: schema migrated");
    }
    tx.commit().await?;
    Ok(found)
}
