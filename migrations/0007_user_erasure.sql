-- Erasing one user of one app (AdminService.DeleteUser, `nudge users delete`; the I/O is
-- server/nudge_server/erasure.py). The erasure deletes the user's devices and push deliveries
-- and pseudonymises their decisions, outcomes and push jobs. Rows of the user's earlier decisions
-- can still be on their way when it runs (the log writer batches and spools them; an outcome or
-- an ignore may be written by a call that started before): the triggers below pseudonymise them
-- on arrival, so that the erasure holds whenever they land.

-- One row per erased user: a hash of the ids, never the ids themselves.
CREATE TABLE user_erasures (
    subject_hash bytea PRIMARY KEY CHECK (length(subject_hash) = 32),  -- user_erasure_subject()
    app_id       text NOT NULL,
    -- Rows of decisions issued up to this time are the erased user's; later ones are of the
    -- user who came back afterwards (a new user) and keep their id.
    erased_at    timestamptz NOT NULL,
    -- The pseudonym that replaced the user id, given to rows that arrive late, so that they
    -- join the erased user's other rows. Kept only for a while (erasure.PSEUDONYM_LINK_TTL):
    -- whoever knows a user id can compute its hash, so while this is stored the pseudonymised
    -- rows can be found from the id. NULL afterwards: a later row gets a fresh pseudonym.
    pseudonym    text
);
CREATE INDEX user_erasures_linked ON user_erasures (erased_at) WHERE pseudonym IS NOT NULL;

-- The erasure's lookups of one user's rows.
CREATE INDEX push_jobs_user ON push_jobs (app_id, user_id);
CREATE INDEX devices_user ON devices (app_id, user_id);

-- SHA-256 of app_id, a NUL byte and user_id (erasure.subject_hash computes the same).
CREATE FUNCTION user_erasure_subject(app_id text, user_id text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT sha256(convert_to(app_id, 'UTF8') || '\x00'::bytea || convert_to(user_id, 'UTF8')) $$;

-- When the server issued a decision id: a version-8 id carries the issue time in ms in its last
-- 6 bytes (server/nudge_server/ids.py). Any other id counts as issued before every erasure.
CREATE FUNCTION decision_issued_at(decision_id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE WHEN substr(decision_id::text, 15, 1) = '8'
                THEN to_timestamp(('x' || right(decision_id::text, 12))::bit(48)::bigint / 1000.0)
                ELSE '-infinity'::timestamptz END
$$;

-- A pseudonym of the same form as erasure.new_pseudonym(), for rows whose erasure no longer
-- keeps its own.
CREATE FUNCTION fresh_user_pseudonym() RETURNS text
LANGUAGE sql VOLATILE
AS $$ SELECT 'erased:' || replace(gen_random_uuid()::text, '-', '') $$;

-- The lock that orders an app's erasures with the writes of its users' rows, held until the
-- transaction ends: the triggers take it shared, an erasure exclusively. A row written by a
-- transaction that overlaps an erasure is then either there before the erasure looks (and
-- pseudonymised by it) or written after the erasure committed (and seen by its trigger); never
-- missed by both. Taken before a row is written, never after: a writer holds no row that an
-- erasure waits for while it waits for the lock. Per app, not per user, so that a batch of the
-- log writer holds one lock per app however many users it carries.
CREATE FUNCTION user_erasure_lock_shared(app_id text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT pg_advisory_xact_lock_shared(1853187442, hashtext(app_id)) $$;

CREATE FUNCTION user_erasure_lock(app_id text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT pg_advisory_xact_lock(1853187442, hashtext(app_id)) $$;

-- Pseudonymising, defined once for the erasure (erasure.py) and for the triggers below: the
-- rows' user id becomes the given pseudonym, and every column the reports do not use that
-- could describe the user is cleared. Each takes parallel arrays of row ids and pseudonyms and
-- returns how many rows it changed.

-- The reports keep app, campaign, arm, event name, requested channel, platform, show, reason,
-- channel, propensity, policy snapshot and the decision times. The response deadline goes: the
-- decision's record in Redis is erased too, so no ignore can be swept (or learned) for it.
CREATE FUNCTION pseudonymise_decisions(ids uuid[], pseudonyms text[]) RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    WITH changed AS (
        UPDATE decisions d
        SET user_id = p.pseudonym, event_time = NULL, event_properties = NULL, surface = '',
            locale = '', time_zone = '', client_request_id = NULL, next_eligible_at = NULL,
            deliver_at = NULL, candidates = NULL, response_deadline = NULL
        FROM unnest(ids, pseudonyms) AS p (decision_id, pseudonym)
        WHERE d.decision_id = p.decision_id
        RETURNING 1
    )
    SELECT count(*) FROM changed
$$;

-- The reports keep type, times, campaign, arm and whether it was rewarded; a conversion's value
-- (what the user spent) goes.
CREATE FUNCTION pseudonymise_outcomes(ids bigint[], pseudonyms text[]) RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    WITH changed AS (
        UPDATE outcomes o
        SET user_id = p.pseudonym, value = NULL
        FROM unnest(ids, pseudonyms) AS p (outcome_id, pseudonym)
        WHERE o.outcome_id = p.outcome_id
        RETURNING 1
    )
    SELECT count(*) FROM changed
$$;

-- A job not delivered yet (waiting, or being sent) is cancelled: status 'erased', a final status
-- that no worker claims, and a worker sending it finds its lease gone. The payload (the prompt and
-- the user's locale) and the time zone go; the job keeps its campaign, arm and times.
CREATE FUNCTION pseudonymise_push_jobs(ids uuid[], pseudonyms text[],
                                       OUT pseudonymised bigint, OUT cancelled bigint)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE push_jobs
    SET status = 'erased', run_after = NULL, claimed_by = NULL, lease_until = NULL,
        last_error = 'user erased', updated_at = now()
    WHERE job_id = ANY (ids) AND status IN ('queued', 'deferred', 'retrying', 'sending');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    UPDATE push_jobs j
    SET user_id = p.pseudonym, payload = '{}'::jsonb, time_zone = ''
    FROM unnest(ids, pseudonyms) AS p (job_id, pseudonym)
    WHERE j.job_id = p.job_id;
    GET DIAGNOSTICS pseudonymised = ROW_COUNT;
END
$$;

-- Before a row is written: the shared lock (see user_erasure_lock_shared).
CREATE FUNCTION lock_for_user_erasure() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM user_erasure_lock_shared(NEW.app_id);
    RETURN NEW;
END
$$;

-- After a statement: its rows of an erased user whose decision was issued by the time of the
-- erasure are pseudonymised (with the erasure's pseudonym while it is kept, else a fresh one
-- per row). Set-based, so that a batch of the log writer pays one join, not a lookup per row.
-- The lookup runs after the lock was taken: in READ COMMITTED it sees every erasure committed
-- by then.
CREATE FUNCTION erase_late_decisions() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    ids uuid[];
    pseudonyms text[];
BEGIN
    SELECT array_agg(w.decision_id), array_agg(coalesce(e.pseudonym, fresh_user_pseudonym()))
    INTO ids, pseudonyms
    FROM written w
    JOIN user_erasures e ON e.subject_hash = user_erasure_subject(w.app_id, w.user_id)
    WHERE decision_issued_at(w.decision_id) <= e.erased_at;
    IF ids IS NOT NULL THEN
        PERFORM pseudonymise_decisions(ids, pseudonyms);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION erase_late_outcomes() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    ids bigint[];
    pseudonyms text[];
BEGIN
    SELECT array_agg(w.outcome_id), array_agg(coalesce(e.pseudonym, fresh_user_pseudonym()))
    INTO ids, pseudonyms
    FROM written w
    JOIN user_erasures e ON e.subject_hash = user_erasure_subject(w.app_id, w.user_id)
    WHERE decision_issued_at(w.decision_id) <= e.erased_at;
    IF ids IS NOT NULL THEN
        PERFORM pseudonymise_outcomes(ids, pseudonyms);
    END IF;
    RETURN NULL;
END
$$;

-- The job id is the decision id.
CREATE FUNCTION erase_late_push_jobs() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    ids uuid[];
    pseudonyms text[];
BEGIN
    SELECT array_agg(w.job_id), array_agg(coalesce(e.pseudonym, fresh_user_pseudonym()))
    INTO ids, pseudonyms
    FROM written w
    JOIN user_erasures e ON e.subject_hash = user_erasure_subject(w.app_id, w.user_id)
    WHERE decision_issued_at(w.job_id) <= e.erased_at;
    IF ids IS NOT NULL THEN
        PERFORM pseudonymise_push_jobs(ids, pseudonyms);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER decisions_erasure_lock BEFORE INSERT ON decisions
    FOR EACH ROW EXECUTE FUNCTION lock_for_user_erasure();
CREATE TRIGGER outcomes_erasure_lock BEFORE INSERT ON outcomes
    FOR EACH ROW EXECUTE FUNCTION lock_for_user_erasure();
CREATE TRIGGER push_jobs_erasure_lock BEFORE INSERT ON push_jobs
    FOR EACH ROW EXECUTE FUNCTION lock_for_user_erasure();
-- Device registrations are written at once, not batched: the lock alone orders them with an
-- erasure (one committed before it is deleted by it; one after it is the returning user's).
CREATE TRIGGER devices_erasure_lock BEFORE INSERT OR UPDATE OF user_id ON devices
    FOR EACH ROW EXECUTE FUNCTION lock_for_user_erasure();

CREATE TRIGGER decisions_erased_user AFTER INSERT ON decisions
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION erase_late_decisions();
-- The log writer's INSERT ... ON CONFLICT DO UPDATE corrects a decision first logged as
-- 'unavailable' with all its columns: a correction that arrives after the erasure must not
-- bring the user id back.
CREATE TRIGGER decisions_erased_user_update AFTER UPDATE ON decisions
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION erase_late_decisions();
CREATE TRIGGER outcomes_erased_user AFTER INSERT ON outcomes
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION erase_late_outcomes();
CREATE TRIGGER push_jobs_erased_user AFTER INSERT ON push_jobs
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION erase_late_push_jobs();
