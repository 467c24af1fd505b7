"""Every SQL statement of the PostgreSQL ledger (``core/ledger_postgres.py``): the versioned
schema migrations and the named queries, as literal text."""

from __future__ import annotations

__all__ = [
    "MAX_ROWS_PER_STATEMENT",
    "MIGRATIONS",
    "MIGRATION_TIMEOUT_MS",
    "SCHEMA_VERSION",
    "STATEMENTS",
]

MIGRATION_TIMEOUT_MS = 120_000

# ``{s}`` is the schema, substituted as a quoted identifier (psycopg.sql), never as text.

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE {s}.signatures (
            id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            key_id           TEXT   NOT NULL,
            alg              TEXT   NOT NULL,
            digest           TEXT   NOT NULL,
            length           BIGINT NOT NULL CHECK (length >= 0),
            artifact         TEXT,
            artifact_type    TEXT,
            partition        TEXT,
            asset_key        TEXT,
            context_json     TEXT   NOT NULL,
            serializer       TEXT   NOT NULL,
            signed_at        TEXT   NOT NULL,
            run_id           TEXT,
            artifact_version TEXT,
            version_num      BIGINT,
            origin           TEXT   NOT NULL CHECK (origin IN ('signed', 'adopted', 'resigned')),
            recorded_at      TEXT   NOT NULL
        )""",
        "CREATE INDEX signatures_by_digest ON {s}.signatures (digest)",
        "CREATE INDEX signatures_by_artifact ON {s}.signatures (artifact, version_num)",
        """CREATE TABLE {s}.aliases (
            artifact   TEXT   NOT NULL,
            alias      TEXT   NOT NULL,
            version    BIGINT NOT NULL CHECK (version >= 0),
            source     TEXT   NOT NULL CHECK (source IN ('writer', 'reader')),
            updated_at TEXT   NOT NULL,
            PRIMARY KEY (artifact, alias)
        )""",
    ),
    # the signed version history (core/history.py; SQLite's schema 2): text compared in a
    # position uses the "C" collation, so the database orders as Python's Position does
    2: (
        """CREATE TABLE {s}.history_sequences (
            artifact      TEXT   PRIMARY KEY,
            last_sequence BIGINT NOT NULL CHECK (last_sequence >= 0),
            updated_at    TEXT   NOT NULL
        )""",
        """CREATE TABLE {s}.history_marks (
            artifact   TEXT   NOT NULL,
            alias      TEXT   NOT NULL,
            sequence   BIGINT NOT NULL CHECK (sequence >= 1),
            signed_at  TEXT   COLLATE "C" NOT NULL,
            digest     TEXT   COLLATE "C" NOT NULL,
            source     TEXT   NOT NULL CHECK (source IN ('writer', 'reader')),
            updated_at TEXT   NOT NULL,
            PRIMARY KEY (artifact, alias)
        )""",
        """CREATE TABLE {s}.history_seen (
            artifact        TEXT   NOT NULL,
            digest          TEXT   COLLATE "C" NOT NULL,
            sequence        BIGINT CHECK (sequence >= 1),
            signed_at       TEXT   COLLATE "C",
            position_digest TEXT   COLLATE "C",
            version         TEXT,
            source          TEXT   NOT NULL CHECK (source IN ('writer', 'reader')),
            recorded_at     TEXT   NOT NULL,
            PRIMARY KEY (artifact, digest)
        )""",
        "CREATE INDEX history_seen_by_position ON {s}.history_seen "
        "(artifact, sequence DESC, signed_at DESC, position_digest DESC, digest DESC) "
        "WHERE sequence IS NOT NULL",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)

MAX_ROWS_PER_STATEMENT = 16  # record_many inserts up to this many rows with one statement

_INSERT_HEAD = (
    "INSERT INTO {s}.signatures (key_id, alg, digest, length, artifact, artifact_type, "
    "partition, asset_key, context_json, serializer, signed_at, run_id, artifact_version, "
    "version_num, origin, recorded_at) VALUES "
)
# recorded_at is the database's clock, not the writer's: a writer cannot backdate it
_INSERT_ROW = (
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
    "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"
)


def _insert_rows(n: int) -> str:
    """One INSERT of ``n`` signature rows (one statement: atomic alone, one round trip). A
    VALUES list is inserted in its order, so the identity ids it hands out ascend with it."""
    return _INSERT_HEAD + ", ".join([_INSERT_ROW] * n) + " RETURNING id"


# The writer's records of a version it published (``record_version``), in one statement: the
# rows' version and writer alias marks (``attach_version``), the manifest seen and the history
# marks (``record_manifest``, ``advance_mark``). Every write is gated on ``ok`` (every row
# exists, and has an artifact name when aliases were asked for): all or nothing. Answers ok,
# the rows found and those of them without an artifact name (for the error).
# Lock order: PostgreSQL runs a WITH's data-modifying parts in no promised order (the last one
# first, in practice), so each part waits for the one before it (``(SELECT count(*) FROM
# previous) >= 0``, true, computed before its first row): rows, alias marks, the manifest seen,
# then the history marks, the order of every other ledger transaction (a reader's batch: its
# manifest, then its mark). Locking a mark before waiting for a reader's uncommitted manifest
# row deadlocked with that reader (tests/adversarial/test_coarse_ledger_lock_order.py). Within a
# part, the alias marks and the history marks are written (locked) in the order of their keys,
# not in the caller's order of names or a hash's: two calls for one artifact naming its aliases
# in different orders lock them in one order (tests/core/test_pgone_ledger_plans.py).
_RECORD_VERSION = (
    "WITH target AS (SELECT id, artifact FROM {s}.signatures WHERE id = ANY(%(ids)s::bigint[])), "
    "ok AS (SELECT count(*) = %(n)s::int AND (%(named)s::int = 0 OR "
    "coalesce(bool_and(artifact IS NOT NULL), true)) AS ok FROM target), "
    "updated AS (UPDATE {s}.signatures AS s SET artifact_version = %(version)s::text, "
    "version_num = %(number)s::bigint FROM ok WHERE ok.ok AND s.id = ANY(%(ids)s::bigint[]) "
    "RETURNING s.artifact), "
    "marked AS (INSERT INTO {s}.aliases AS a (artifact, alias, version, source, updated_at) "
    "SELECT DISTINCT u.artifact, n.alias, %(number)s::bigint, 'writer', %(now)s::text "
    "FROM updated u, unnest(%(aliases)s::text[]) AS n(alias) WHERE u.artifact IS NOT NULL "
    "ORDER BY 1, 2 "
    "ON CONFLICT (artifact, alias) DO UPDATE SET version = excluded.version, "
    "source = excluded.source, updated_at = excluded.updated_at "
    "WHERE excluded.version > a.version RETURNING 1), "
    "seen AS (INSERT INTO {s}.history_seen (artifact, digest, sequence, signed_at, "
    "position_digest, version, source, recorded_at) SELECT %(key)s::text, %(digest)s::text, "
    "%(seq)s::bigint, %(at)s::text, %(pdigest)s::text, %(version)s::text, 'writer', "
    "%(now)s::text FROM ok WHERE ok.ok AND %(key)s::text IS NOT NULL "
    "AND (SELECT count(*) FROM marked) >= 0 "
    "ON CONFLICT (artifact, digest) DO NOTHING RETURNING 1), "
    "hmarks AS (INSERT INTO {s}.history_marks AS m (artifact, alias, sequence, signed_at, digest, "
    "source, updated_at) SELECT %(key)s::text, n.alias, %(seq)s::bigint, %(at)s::text, "
    "%(pdigest)s::text, 'writer', %(now)s::text FROM ok, unnest(%(marks)s::text[]) AS n(alias) "
    "WHERE ok.ok AND (SELECT count(*) FROM seen) >= 0 ORDER BY n.alias "
    "ON CONFLICT (artifact, alias) DO UPDATE SET sequence = excluded.sequence, "
    "signed_at = excluded.signed_at, digest = excluded.digest, source = excluded.source, "
    "updated_at = excluded.updated_at WHERE (excluded.sequence, excluded.signed_at, "
    "excluded.digest) > (m.sequence, m.signed_at, m.digest) RETURNING 1) "
    "SELECT ok.ok, ARRAY(SELECT id FROM target ORDER BY id), "
    "ARRAY(SELECT id FROM target WHERE artifact IS NULL ORDER BY id){flush} "
    "FROM ok"
)

# ``allocate_next``: the newest seen manifest and the allocation above it, one statement (both
# read the same snapshot, under the writer's history lock)
_ALLOCATE_NEXT = (
    "WITH seen AS (SELECT digest, sequence, signed_at, position_digest, version "
    "FROM {s}.history_seen WHERE artifact = %(a)s::text AND sequence IS NOT NULL "
    "ORDER BY sequence DESC, signed_at DESC, position_digest DESC, digest DESC LIMIT 1), "
    "alloc AS (INSERT INTO {s}.history_sequences AS h (artifact, last_sequence, updated_at) "
    "SELECT %(a)s::text, GREATEST(%(floor)s::bigint, coalesce((SELECT sequence FROM seen), 0)) "
    "+ 1, %(now)s::text{flush} ON CONFLICT (artifact) DO UPDATE SET "
    "last_sequence = GREATEST(h.last_sequence + 1, excluded.last_sequence), "
    "updated_at = excluded.updated_at RETURNING last_sequence) "
    "SELECT (SELECT last_sequence FROM alloc), s.digest, s.sequence, s.signed_at, "
    "s.position_digest, s.version FROM (SELECT 1) AS one LEFT JOIN seen AS s ON true"
)
_UNFLUSHED = "set_config('synchronous_commit', 'off', true)"

STATEMENTS: dict[str, str] = {
    "regclass": "SELECT to_regclass(%s)",
    "has_schema": "SELECT 1 FROM pg_namespace WHERE nspname = %s",
    "create_schema": "CREATE SCHEMA {s}",
    "create_migrations": (
        "CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
        " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ),
    "schema_version": "SELECT MAX(version) FROM {s}.schema_migrations",
    "record_migration": "INSERT INTO {s}.schema_migrations (version) VALUES (%s)",
    "lock": "SELECT pg_advisory_xact_lock(%s)",
    "begin": "BEGIN",
    "commit": "COMMIT",
    "rollback": "ROLLBACK",
    # a transaction whose every write may be lost commits without its own WAL flush
    # (core/ledger_postgres_tx.py: the next durable commit flushes it)
    "unflushed": "SELECT set_config('synchronous_commit', 'off', true)",
    "migration_timeout": f"SET LOCAL statement_timeout = {MIGRATION_TIMEOUT_MS}",
    "insert": _insert_rows(1),
    # attach_version in one statement: set the row's version, raise the writer's marks of its
    # artifact; answers (row exists, its artifact). Nothing changes when the row is missing, or
    # has no artifact name while aliases were asked for (``named`` > 0).
    "attach": (
        "WITH target AS (SELECT artifact FROM {s}.signatures WHERE id = %(id)s), "
        "updated AS (UPDATE {s}.signatures SET artifact_version = %(version)s, "
        "version_num = %(number)s WHERE id = %(id)s "
        "AND (artifact IS NOT NULL OR %(named)s::int = 0) RETURNING artifact), "
        "marked AS (INSERT INTO {s}.aliases AS a (artifact, alias, version, source, updated_at) "
        "SELECT u.artifact, n.alias, %(number)s, 'writer', %(now)s "
        "FROM updated u, unnest(%(aliases)s::text[]) AS n(alias) WHERE u.artifact IS NOT NULL "
        "ORDER BY n.alias ON CONFLICT (artifact, alias) DO UPDATE SET version = excluded.version, "
        "source = excluded.source, updated_at = excluded.updated_at "
        "WHERE excluded.version > a.version RETURNING 1) "
        "SELECT EXISTS (SELECT 1 FROM target), (SELECT artifact FROM target)"
    ),
    "raise_mark": (
        "INSERT INTO {s}.aliases AS a (artifact, alias, version, source, updated_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (artifact, alias) DO UPDATE SET "
        "version = excluded.version, source = excluded.source, "
        "updated_at = excluded.updated_at WHERE excluded.version > a.version"
    ),
    "newest_latest": (
        "SELECT GREATEST((SELECT MAX(version) FROM {s}.aliases WHERE artifact = %s), "
        "(SELECT MAX(version_num) FROM {s}.signatures WHERE artifact = %s))"
    ),
    "newest_alias": "SELECT version FROM {s}.aliases WHERE artifact = %s AND alias = %s",
    "aliases": "SELECT alias, version FROM {s}.aliases WHERE artifact = %s ORDER BY alias",
    "marks": (
        "SELECT artifact, alias, version, source FROM {s}.aliases ORDER BY artifact, alias"
    ),
    "select_all": (
        "SELECT id, key_id, alg, digest, length, artifact, artifact_type, partition, asset_key, "
        "context_json, serializer, signed_at, run_id, artifact_version, origin, recorded_at "
        "FROM {s}.signatures ORDER BY id"
    ),
    "select_by_digest": (
        "SELECT id, key_id, alg, digest, length, artifact, artifact_type, partition, asset_key, "
        "context_json, serializer, signed_at, run_id, artifact_version, origin, recorded_at "
        "FROM {s}.signatures WHERE digest = %s ORDER BY id"
    ),
    "select_by_artifact": (
        "SELECT id, key_id, alg, digest, length, artifact, artifact_type, partition, asset_key, "
        "context_json, serializer, signed_at, run_id, artifact_version, origin, recorded_at "
        "FROM {s}.signatures WHERE artifact = %s ORDER BY id"
    ),
    "count": "SELECT COUNT(*) FROM {s}.signatures",
    "counts": (
        "SELECT (SELECT COUNT(*) FROM {s}.signatures), "
        "(SELECT COUNT(DISTINCT artifact) FROM {s}.signatures), (SELECT COUNT(*) FROM {s}.aliases)"
    ),
    "ping": "SELECT 1",
    "history_counts": (
        "SELECT (SELECT COUNT(*) FROM {s}.history_sequences), "
        "(SELECT COUNT(*) FROM {s}.history_marks), (SELECT COUNT(*) FROM {s}.history_seen)"
    ),
    "history_lock": "SELECT pg_advisory_lock(%s)",
    "history_unlock": "SELECT pg_advisory_unlock(%s)",
    # one statement: max(last, floor) + 1, atomic under concurrency (the row is locked by the
    # conflicting insert), never reused
    "allocate": (
        "INSERT INTO {s}.history_sequences AS h (artifact, last_sequence, updated_at) "
        "VALUES (%s, %s, %s) ON CONFLICT (artifact) DO UPDATE SET "
        "last_sequence = GREATEST(h.last_sequence + 1, excluded.last_sequence), "
        "updated_at = excluded.updated_at RETURNING last_sequence"
    ),
    # the same, committed without its own WAL flush (synchronous_commit off for this one
    # transaction): the durable commit of the signature rows, which must follow before any
    # version is published, flushes the WAL up to and including it; an allocation lost in a
    # server crash before that was used by no published version (SECURITY.md)
    "allocate_unflushed": (
        "INSERT INTO {s}.history_sequences AS h (artifact, last_sequence, updated_at) "
        "SELECT %s, %s, %s FROM (SELECT set_config('synchronous_commit', 'off', true)) AS c "
        "ON CONFLICT (artifact) DO UPDATE SET "
        "last_sequence = GREATEST(h.last_sequence + 1, excluded.last_sequence), "
        "updated_at = excluded.updated_at RETURNING last_sequence"
    ),
    "mark": (
        "SELECT sequence, signed_at, digest FROM {s}.history_marks "
        "WHERE artifact = %s AND alias = %s"
    ),
    # atomic under concurrency: ON CONFLICT DO UPDATE locks the row and evaluates the WHERE
    # on its newest version (READ COMMITTED), so a mark never moves back
    "advance_mark": (
        "INSERT INTO {s}.history_marks AS m (artifact, alias, sequence, signed_at, digest, "
        "source, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (artifact, alias) DO UPDATE SET sequence = excluded.sequence, "
        "signed_at = excluded.signed_at, digest = excluded.digest, source = excluded.source, "
        "updated_at = excluded.updated_at WHERE (excluded.sequence, excluded.signed_at, "
        "excluded.digest) > (m.sequence, m.signed_at, m.digest)"
    ),
    "marks_of": (
        "SELECT alias, sequence, signed_at, digest FROM {s}.history_marks "
        "WHERE artifact = %s ORDER BY alias"
    ),
    "record_manifest": (
        "INSERT INTO {s}.history_seen (artifact, digest, sequence, signed_at, position_digest, "
        "version, source, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (artifact, digest) DO NOTHING"
    ),
    "seen_manifest": (
        "SELECT digest, sequence, signed_at, position_digest, version FROM {s}.history_seen "
        "WHERE artifact = %s AND digest = %s"
    ),
    "seen_manifests": (
        "SELECT digest, sequence, signed_at, position_digest, version FROM {s}.history_seen "
        "WHERE artifact = %s AND digest = ANY(%s)"
    ),
    "newest_seen": (
        "SELECT digest, sequence, signed_at, position_digest, version FROM {s}.history_seen "
        "WHERE artifact = %s AND sequence IS NOT NULL "
        "ORDER BY sequence DESC, signed_at DESC, position_digest DESC, digest DESC LIMIT 1"
    ),
    "all_sequences": (
        "SELECT artifact, last_sequence FROM {s}.history_sequences ORDER BY artifact"
    ),
    "all_history_marks": (
        "SELECT artifact, alias, sequence, signed_at, digest, source FROM {s}.history_marks "
        "ORDER BY artifact, alias"
    ),
    "all_seen": (
        "SELECT artifact, digest, sequence, signed_at, position_digest, version, source "
        "FROM {s}.history_seen ORDER BY artifact, recorded_at, digest"
    ),
    **{f"insert_{n}": _insert_rows(n) for n in range(2, MAX_ROWS_PER_STATEMENT + 1)},
    # inside a batch() the batch's COMMIT decides the flush; alone, these writes may be lost
    # (the writer's records after its publish, an allocation: core/ledger_postgres_tx.py)
    "record_version": _RECORD_VERSION.format(s="{s}", flush=""),
    "record_version_unflushed": _RECORD_VERSION.format(s="{s}", flush=f", {_UNFLUSHED}"),
    "allocate_next": _ALLOCATE_NEXT.format(s="{s}", flush=""),
    "allocate_next_unflushed": _ALLOCATE_NEXT.format(
        s="{s}", flush=f" FROM (SELECT {_UNFLUSHED}) AS c"
    ),
}
