using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace SiteLink.Relay.ControlPlane.Store;

/// <summary>What differs between the store's databases: how to connect, the migrations' few type names, locking.</summary>
internal abstract class StoreDialect : IAsyncDisposable
{
    /// <summary>
    /// The schema, one list of statements per version, written once for both databases: <c>{id}</c> is each database's
    /// auto-numbered key. Add a version at the end; never edit one that shipped.
    /// </summary>
    public static readonly IReadOnlyList<string[]> Migrations =
    [
        [
            "CREATE TABLE sitelink_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO sitelink_meta (name, value) VALUES ('revision', 0)",
            "CREATE TABLE sitelink_resources (kind TEXT NOT NULL, name TEXT NOT NULL, tenant TEXT NOT NULL, body TEXT NOT NULL, version BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (kind, name))",
            "CREATE INDEX sitelink_resources_by_tenant ON sitelink_resources (kind, tenant, name)",
            "CREATE TABLE sitelink_audit ({id}, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, status BIGINT NOT NULL, detail TEXT)",
            "CREATE TABLE sitelink_dead_letters ({id}, subscription TEXT NOT NULL, tenant TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, error TEXT NOT NULL, attempts BIGINT NOT NULL, at BIGINT NOT NULL)",
            "CREATE INDEX sitelink_dead_letters_by_subscription ON sitelink_dead_letters (subscription, id)",
        ],
        [
            // Deleted resources, so a relay can load what changed since the revision it applied instead of everything.
            "CREATE TABLE sitelink_tombstones (kind TEXT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL, deleted_at BIGINT NOT NULL, PRIMARY KEY (kind, name))",
            "CREATE INDEX sitelink_resources_by_version ON sitelink_resources (version)",
            "CREATE INDEX sitelink_tombstones_by_version ON sitelink_tombstones (version)",
            // Tombstones up to this revision were pruned: a relay that applied an older one loads everything.
            "INSERT INTO sitelink_meta (name, value) VALUES ('tombstones_pruned', 0)",
        ],
    ];

    public abstract string Provider { get; }

    protected abstract string IdColumn { get; }

    public IEnumerable<string> Migration(int version) => Migrations[version - 1].Select(s => s.Replace("{id}", IdColumn, StringComparison.Ordinal));

    public abstract ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken);

    /// <summary>A transaction that reads one consistent snapshot without taking the writers' lock.</summary>
    public virtual async Task<DbTransaction> BeginReadAsync(DbConnection connection, CancellationToken cancellationToken) =>
        await connection.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken).ConfigureAwait(false);

    /// <summary>Makes replicas that start together apply migrations one after the other.</summary>
    public virtual Task LockForMigrationAsync(DbConnection connection, DbTransaction transaction, CancellationToken cancellationToken) => Task.CompletedTask;

    public abstract ValueTask DisposeAsync();

    public static StoreDialect Create(string provider, string connectionString) => provider.ToLowerInvariant() switch
    {
        "sqlite" => new Sqlite(connectionString),
        "postgres" or "postgresql" => new Postgres(connectionString),
        _ => throw new ArgumentException($"unknown store provider '{provider}' (sqlite or postgres)", nameof(provider)),
    };

    private sealed class Sqlite : StoreDialect
    {
        private readonly string _connectionString;
        // An in-memory database lives as long as one connection to it is open.
        private readonly SqliteConnection? _keepAlive;

        public Sqlite(string connectionString)
        {
            var builder = new SqliteConnectionStringBuilder(connectionString)
            {
                // Writers wait for each other this long (seconds) instead of failing with SQLITE_BUSY.
                DefaultTimeout = 30,
                Pooling = true,
            };
            _connectionString = builder.ToString();
            if (builder.Mode == SqliteOpenMode.Memory)
            {
                _keepAlive = new SqliteConnection(_connectionString);
                _keepAlive.Open();
            }
            else if (Path.GetDirectoryName(Path.GetFullPath(builder.DataSource)) is { } folder)
            {
                Directory.CreateDirectory(folder);
            }
        }

        public override string Provider => "sqlite";

        // Deferred: a WAL reader's snapshot, not BEGIN IMMEDIATE (which would queue behind, and block, every writer).
        public override Task<DbTransaction> BeginReadAsync(DbConnection connection, CancellationToken cancellationToken) =>
            Task.FromResult<DbTransaction>(((SqliteConnection)connection).BeginTransaction(deferred: true));

        protected override string IdColumn => "id INTEGER PRIMARY KEY AUTOINCREMENT";

        public override async ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken)
        {
            var connection = new SqliteConnection(_connectionString);
            try
            {
                await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
                using var pragma = connection.CreateCommand();
                // WAL: readers do not wait for the writer. foreign_keys unused; synchronous NORMAL is safe with WAL.
                pragma.CommandText = _keepAlive is null ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;" : "PRAGMA synchronous = NORMAL;";
                await pragma.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                return connection;
            }
            catch
            {
                await connection.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }

        public override async ValueTask DisposeAsync()
        {
            if (_keepAlive is not null)
            {
                await _keepAlive.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private sealed class Postgres(string connectionString) : StoreDialect
    {
        private readonly NpgsqlDataSource _source = NpgsqlDataSource.Create(connectionString);

        public override string Provider => "postgres";

        protected override string IdColumn => "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";

        public override async ValueTask<DbConnection> OpenAsync(CancellationToken cancellationToken) =>
            await _source.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);

        public override async Task LockForMigrationAsync(DbConnection connection, DbTransaction transaction, CancellationToken cancellationToken)
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            // Held until the transaction ends; any number unlikely to be another application's.
            command.CommandText = "SELECT pg_advisory_xact_lock(7336584920131)";
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        public override ValueTask DisposeAsync() => _source.DisposeAsync();
    }
}
