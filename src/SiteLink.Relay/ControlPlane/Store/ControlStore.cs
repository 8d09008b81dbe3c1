using System.Data;
using System.Data.Common;
using System.Globalization;

namespace SiteLink.Relay.ControlPlane.Store;

/// <summary>
/// A resource the control plane keeps: a tenant, an authtoken, a cloud endpoint, an admin key or a webhook
/// subscription. Its <see cref="Body"/> is the resource as JSON; <see cref="Version"/> is the store's revision when it
/// was last written (so it only grows, and an update names the version it read to be refused when someone else wrote
/// in between).
/// </summary>
/// <param name="Kind">What it is (<see cref="ResourceKinds"/>).</param>
/// <param name="Name">Its name, unique per kind (lower case).</param>
/// <param name="Tenant">The tenant it belongs to ("" for relay-wide resources such as admin keys).</param>
/// <param name="Body">The resource, as JSON.</param>
/// <param name="Version">The store revision of its last write.</param>
/// <param name="CreatedAt">When it was created.</param>
/// <param name="UpdatedAt">When it was last written.</param>
public sealed record StoredResource(string Kind, string Name, string Tenant, string Body, long Version, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

/// <summary>The kinds of <see cref="StoredResource"/>.</summary>
public static class ResourceKinds
{
    /// <summary>A tenant: a customer of the vendor.</summary>
    public const string Tenant = "tenant";

    /// <summary>An authtoken agents present.</summary>
    public const string Token = "token";

    /// <summary>A cloud endpoint.</summary>
    public const string Endpoint = "endpoint";

    /// <summary>A key for the admin API.</summary>
    public const string AdminKey = "admin-key";

    /// <summary>A webhook subscription to events.</summary>
    public const string Subscription = "subscription";
}

/// <summary>One page of a listing, and where the next starts (null at the end).</summary>
/// <param name="Items">The page.</param>
/// <param name="Next">The cursor of the next page, or null.</param>
public sealed record StorePage<T>(IReadOnlyList<T> Items, string? Next);

/// <summary>Everything the relay applies from the store, read in one transaction.</summary>
/// <param name="Revision">The store's revision.</param>
/// <param name="Resources">Every resource.</param>
public sealed record StoreSnapshot(long Revision, IReadOnlyList<StoredResource> Resources);

/// <summary>What changed in the store since a revision.</summary>
/// <param name="Revision">The store's revision now.</param>
/// <param name="Written">Resources created or changed since.</param>
/// <param name="Deleted">Resources deleted since (kind, name).</param>
public sealed record StoreChanges(long Revision, IReadOnlyList<StoredResource> Written, IReadOnlyList<(string Kind, string Name)> Deleted);

/// <summary>One audited admin call.</summary>
/// <param name="Id">Its number, assigned by the store (0 when appending).</param>
/// <param name="At">When the call was made.</param>
/// <param name="Actor">Who made it: <c>key:NAME</c> or <c>jwt:SUBJECT</c>, or <c>anonymous</c>.</param>
/// <param name="Action">The method and route, e.g. <c>POST /v1/tokens</c>.</param>
/// <param name="Target">The resource it concerned, e.g. <c>token/acme-prod</c>.</param>
/// <param name="Status">The HTTP status answered.</param>
/// <param name="Detail">A problem's title, or empty.</param>
public sealed record AuditEntry(long Id, DateTimeOffset At, string Actor, string Action, string Target, int Status, string Detail);

/// <summary>An event no delivery attempt could hand to its subscription's receiver, kept for the vendor to see.</summary>
/// <param name="Id">Its number, assigned by the store (0 when adding).</param>
/// <param name="Subscription">The subscription's id.</param>
/// <param name="Tenant">The event's tenant.</param>
/// <param name="EventId">The CloudEvents id.</param>
/// <param name="EventType">The event type.</param>
/// <param name="Payload">The CloudEvents JSON that was to be delivered.</param>
/// <param name="Error">Why it was not: the last attempt's error, or "queue full".</param>
/// <param name="Attempts">How many deliveries were attempted.</param>
/// <param name="At">When it was given up.</param>
public sealed record StoredDeadLetter(long Id, string Subscription, string Tenant, string EventId, string EventType, string Payload, string Error, int Attempts, DateTimeOffset At);

/// <summary>The resource (kind, name) already exists.</summary>
/// <param name="message">What exists.</param>
public sealed class StoreConflictException(string message) : Exception(message);

/// <summary>The resource does not exist.</summary>
/// <param name="message">What is missing.</param>
public sealed class StoreNotFoundException(string message) : Exception(message);

/// <summary>The resource's version is not the one the caller read (someone else wrote it since).</summary>
/// <param name="current">Its version now.</param>
public sealed class StorePreconditionException(long current) : Exception($"the resource changed since it was read: its version is now {current.ToString(CultureInfo.InvariantCulture)}")
{
    /// <summary>The resource's version now.</summary>
    public long Current { get; } = current;
}

/// <summary>
/// The control plane's persistent store: one schema for SQLite (the embedded default, a file next to the relay) and
/// PostgreSQL (what replicas share), written in the SQL both understand. Every write bumps one revision number in the
/// same transaction; replicas poll it (<see cref="RevisionAsync"/>) and reload when it moved. Migrations are applied
/// at start, once, even when replicas start together (PostgreSQL: under an advisory lock).
/// </summary>
public sealed class ControlStore : IAsyncDisposable
{
    /// <summary>Largest page a listing returns.</summary>
    public const int MaxPageSize = 500;

    /// <summary>Audit entries kept; older ones are pruned.</summary>
    public const int MaxAuditEntries = 100_000;

    /// <summary>Dead letters kept; older ones are pruned.</summary>
    public const int MaxDeadLetters = 10_000;

    private readonly StoreDialect _dialect;
    private readonly TimeProvider _time;
    // SQLite takes one writer at a time: writers wait here rather than on SQLITE_BUSY.
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private long _writes;
    private long _deletes;

    private ControlStore(StoreDialect dialect, TimeProvider time)
    {
        _dialect = dialect;
        _time = time;
    }

    /// <summary>The revision of this store's latest committed write (0 before the first).</summary>
    public long LastWrittenRevision => Volatile.Read(ref _lastWritten);

    private long _lastWritten;

    /// <summary>Which database: <c>sqlite</c> or <c>postgres</c>.</summary>
    public string Provider => _dialect.Provider;

    /// <summary>Opens (and migrates) a store.</summary>
    /// <param name="provider"><c>sqlite</c> or <c>postgres</c>.</param>
    /// <param name="connectionString">The database's connection string.</param>
    /// <param name="time">The clock for timestamps.</param>
    /// <param name="cancellationToken">Cancels opening.</param>
    public static async Task<ControlStore> OpenAsync(string provider, string connectionString, TimeProvider time, CancellationToken cancellationToken)
    {
        var dialect = StoreDialect.Create(provider, connectionString);
        var store = new ControlStore(dialect, time);
        try
        {
            await store.MigrateAsync(cancellationToken).ConfigureAwait(false);
            return store;
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The schema version this code writes.</summary>
    public static int SchemaVersion => StoreDialect.Migrations.Count;

    private async Task MigrateAsync(CancellationToken cancellationToken)
    {
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
        await _dialect.LockForMigrationAsync(connection, transaction, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(connection, transaction, "CREATE TABLE IF NOT EXISTS sitelink_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)", cancellationToken).ConfigureAwait(false);
        var applied = Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT COALESCE(MAX(version), 0) FROM sitelink_schema", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
        if (applied > SchemaVersion)
        {
            throw new InvalidOperationException($"The store's schema is version {applied.ToString(CultureInfo.InvariantCulture)}, newer than this relay's ({SchemaVersion.ToString(CultureInfo.InvariantCulture)}): upgrade the relay.");
        }

        for (var version = (int)applied + 1; version <= SchemaVersion; version++)
        {
            foreach (var statement in _dialect.Migration(version))
            {
                await ExecuteAsync(connection, transaction, statement, cancellationToken).ConfigureAwait(false);
            }

            await ExecuteAsync(connection, transaction, "INSERT INTO sitelink_schema (version, applied_at) VALUES (@v, @at)", cancellationToken, ("v", (long)version), ("at", Now())).ConfigureAwait(false);
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The store's revision: it grows with every write, by anyone.</summary>
    public async Task<long> RevisionAsync(CancellationToken cancellationToken)
    {
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        return Convert.ToInt64(await ScalarAsync(connection, null, "SELECT value FROM sitelink_meta WHERE name = 'revision'", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
    }

    /// <summary>Every resource and the revision they are at, read together.</summary>
    public async Task<StoreSnapshot> LoadAsync(CancellationToken cancellationToken)
    {
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await _dialect.BeginReadAsync(connection, cancellationToken).ConfigureAwait(false);
        var revision = Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT value FROM sitelink_meta WHERE name = 'revision'", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
        var resources = await QueryResourcesAsync(connection, transaction, $"SELECT {ResourceColumns} FROM sitelink_resources ORDER BY kind, name", cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return new StoreSnapshot(revision, resources);
    }

    /// <summary>
    /// What changed since <paramref name="since"/> (a revision a relay applied): resources written after it and those
    /// deleted after it, read together with the revision they lead to. Null when deletions that old were pruned: load
    /// everything instead (<see cref="LoadAsync"/>).
    /// </summary>
    public async Task<StoreChanges?> LoadChangesAsync(long since, CancellationToken cancellationToken)
    {
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        using var transaction = await _dialect.BeginReadAsync(connection, cancellationToken).ConfigureAwait(false);
        var pruned = Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT value FROM sitelink_meta WHERE name = 'tombstones_pruned'", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
        if (since < pruned)
        {
            return null;
        }

        var revision = Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT value FROM sitelink_meta WHERE name = 'revision'", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
        var written = await QueryResourcesAsync(connection, transaction, $"SELECT {ResourceColumns} FROM sitelink_resources WHERE version > @since", cancellationToken, ("since", since)).ConfigureAwait(false);
        var deleted = new List<(string Kind, string Name)>();
        using (var command = Command(connection, transaction, "SELECT kind, name FROM sitelink_tombstones WHERE version > @since", ("since", since)))
        using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                deleted.Add((reader.GetString(0), reader.GetString(1)));
            }
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return new StoreChanges(revision, written, deleted);
    }

    /// <summary>Tombstones are kept this long; a relay that falls further behind loads everything.</summary>
    public static readonly TimeSpan TombstoneLifetime = TimeSpan.FromDays(1);

    /// <summary>One resource, or null.</summary>
    public async Task<StoredResource?> GetAsync(string kind, string name, CancellationToken cancellationToken)
    {
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        var found = await QueryResourcesAsync(connection, null, $"SELECT {ResourceColumns} FROM sitelink_resources WHERE kind = @kind AND name = @name", cancellationToken, ("kind", kind), ("name", name)).ConfigureAwait(false);
        return found.Count == 0 ? null : found[0];
    }

    /// <summary>
    /// A page of one kind's resources in name order, optionally of one tenant, starting after <paramref name="after"/>
    /// (the previous page's <see cref="StorePage{T}.Next"/>).
    /// </summary>
    public async Task<StorePage<StoredResource>> ListAsync(string kind, string? tenant, string? after, int limit, CancellationToken cancellationToken)
    {
        limit = Math.Clamp(limit, 1, MaxPageSize);
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        var sql = $"SELECT {ResourceColumns} FROM sitelink_resources WHERE kind = @kind"
            + (tenant is null ? "" : " AND tenant = @tenant")
            + (after is null ? "" : " AND name > @after")
            + " ORDER BY name LIMIT @limit";
        var items = await QueryResourcesAsync(connection, null, sql, cancellationToken,
            ("kind", kind), ("tenant", tenant), ("after", after), ("limit", (long)limit + 1)).ConfigureAwait(false);
        return PageOf(items, limit, r => r.Name);
    }

    /// <summary>How many resources of a kind a tenant has (for quotas and for refusing to delete a tenant in use).</summary>
    public async Task<long> CountAsync(string kind, string tenant, CancellationToken cancellationToken)
    {
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        return Convert.ToInt64(await ScalarAsync(connection, null, "SELECT COUNT(*) FROM sitelink_resources WHERE kind = @kind AND tenant = @tenant", cancellationToken, ("kind", kind), ("tenant", tenant)).ConfigureAwait(false), CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Creates a resource. With <paramref name="requireTenant"/>, only while a tenant of its <paramref name="tenant"/> is
    /// stored; with <paramref name="maxOfTenant"/>, only while its tenant has fewer resources of its kind. Both are checked
    /// in the creating transaction, after every other write (so two concurrent calls cannot both pass).
    /// <exception cref="StoreConflictException">It exists, its tenant does not, or its tenant has its most.</exception>
    /// </summary>
    public Task<StoredResource> CreateAsync(string kind, string name, string tenant, string body, CancellationToken cancellationToken, bool requireTenant = false, int? maxOfTenant = null) =>
        WriteAsync(async (connection, transaction, revision, now) =>
        {
            var exists = await ScalarAsync(connection, transaction, "SELECT COUNT(*) FROM sitelink_resources WHERE kind = @kind AND name = @name", cancellationToken, ("kind", kind), ("name", name)).ConfigureAwait(false);
            if (Convert.ToInt64(exists, CultureInfo.InvariantCulture) != 0)
            {
                throw new StoreConflictException($"a {kind} named '{name}' already exists");
            }

            if (requireTenant && Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT COUNT(*) FROM sitelink_resources WHERE kind = @kind AND name = @name", cancellationToken,
                ("kind", ResourceKinds.Tenant), ("name", tenant)).ConfigureAwait(false), CultureInfo.InvariantCulture) == 0)
            {
                throw new StoreConflictException($"tenant '{tenant}' does not exist (it was deleted meanwhile)");
            }

            if (maxOfTenant is { } max && Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT COUNT(*) FROM sitelink_resources WHERE kind = @kind AND tenant = @tenant", cancellationToken,
                ("kind", kind), ("tenant", tenant)).ConfigureAwait(false), CultureInfo.InvariantCulture) >= max)
            {
                throw new StoreConflictException($"tenant '{tenant}' has {max.ToString(CultureInfo.InvariantCulture)} {kind}s, the most it may");
            }

            // A name deleted earlier and created again: the resource row (newer) is what counts.
            await ExecuteAsync(connection, transaction, "DELETE FROM sitelink_tombstones WHERE kind = @kind AND name = @name", cancellationToken, ("kind", kind), ("name", name)).ConfigureAwait(false);
            await ExecuteAsync(connection, transaction,
                "INSERT INTO sitelink_resources (kind, name, tenant, body, version, created_at, updated_at) VALUES (@kind, @name, @tenant, @body, @version, @now, @now)",
                cancellationToken, ("kind", kind), ("name", name), ("tenant", tenant), ("body", body), ("version", revision), ("now", now)).ConfigureAwait(false);
            return new StoredResource(kind, name, tenant, body, revision, FromUnixMs(now), FromUnixMs(now));
        }, cancellationToken);

    /// <summary>
    /// Replaces a resource's body. With <paramref name="expectedVersion"/>, only when it is still at that version.
    /// <exception cref="StoreNotFoundException">It does not exist.</exception>
    /// <exception cref="StorePreconditionException">It is at another version.</exception>
    /// </summary>
    public Task<StoredResource> UpdateAsync(string kind, string name, string body, long? expectedVersion, CancellationToken cancellationToken) =>
        WriteAsync(async (connection, transaction, revision, now) =>
        {
            var current = await RequireAsync(connection, transaction, kind, name, expectedVersion, cancellationToken).ConfigureAwait(false);
            await ExecuteAsync(connection, transaction, "UPDATE sitelink_resources SET body = @body, version = @version, updated_at = @now WHERE kind = @kind AND name = @name",
                cancellationToken, ("kind", kind), ("name", name), ("body", body), ("version", revision), ("now", now)).ConfigureAwait(false);
            return current with { Body = body, Version = revision, UpdatedAt = FromUnixMs(now) };
        }, cancellationToken);

    /// <summary>
    /// Deletes a resource (with <paramref name="expectedVersion"/>, only at that version); returns what it was. With
    /// <paramref name="unlessOwning"/>, a tenant is deleted only while no other resource belongs to it, checked in the
    /// deleting transaction, after every other write (so a resource created for it meanwhile is never left without it).
    /// </summary>
    /// <inheritdoc cref="UpdateAsync" path="/summary/exception"/>
    /// <exception cref="StoreConflictException">With <paramref name="unlessOwning"/>: it is a tenant that still has tokens, endpoints or subscriptions.</exception>
    public Task<StoredResource> DeleteAsync(string kind, string name, long? expectedVersion, CancellationToken cancellationToken, bool unlessOwning = false) =>
        WriteAsync(async (connection, transaction, revision, now) =>
        {
            var current = await RequireAsync(connection, transaction, kind, name, expectedVersion, cancellationToken).ConfigureAwait(false);
            if (unlessOwning && kind == ResourceKinds.Tenant)
            {
                var owned = Convert.ToInt64(await ScalarAsync(connection, transaction, "SELECT COUNT(*) FROM sitelink_resources WHERE tenant = @tenant AND kind <> @kind", cancellationToken,
                    ("tenant", name), ("kind", ResourceKinds.Tenant)).ConfigureAwait(false), CultureInfo.InvariantCulture);
                if (owned > 0)
                {
                    throw new StoreConflictException($"tenant '{name}' still has {owned.ToString(CultureInfo.InvariantCulture)} tokens, endpoints or subscriptions: delete them first");
                }
            }

            await ExecuteAsync(connection, transaction, "DELETE FROM sitelink_resources WHERE kind = @kind AND name = @name", cancellationToken, ("kind", kind), ("name", name)).ConfigureAwait(false);
            await ExecuteAsync(connection, transaction,
                "INSERT INTO sitelink_tombstones (kind, name, version, deleted_at) VALUES (@kind, @name, @version, @now) ON CONFLICT (kind, name) DO UPDATE SET version = @version, deleted_at = @now",
                cancellationToken, ("kind", kind), ("name", name), ("version", revision), ("now", now)).ConfigureAwait(false);
            if (Interlocked.Increment(ref _deletes) % 64 == 0)
            {
                // Old tombstones go; the revision they reach is recorded so relays further behind load everything.
                var cutoff = now - (long)TombstoneLifetime.TotalMilliseconds;
                await ExecuteAsync(connection, transaction,
                    "UPDATE sitelink_meta SET value = (SELECT COALESCE(MAX(version), value) FROM sitelink_tombstones WHERE deleted_at < @cutoff) WHERE name = 'tombstones_pruned' AND EXISTS (SELECT 1 FROM sitelink_tombstones WHERE deleted_at < @cutoff)",
                    cancellationToken, ("cutoff", cutoff)).ConfigureAwait(false);
                await ExecuteAsync(connection, transaction, "DELETE FROM sitelink_tombstones WHERE deleted_at < @cutoff", cancellationToken, ("cutoff", cutoff)).ConfigureAwait(false);
            }

            return current;
        }, cancellationToken);

    /// <summary>Appends audit entries (their ids are assigned by the store).</summary>
    public async Task AppendAuditAsync(IReadOnlyList<AuditEntry> entries, CancellationToken cancellationToken)
    {
        if (entries.Count == 0)
        {
            return;
        }

        await AppendAsync(async (connection, transaction) =>
        {
            foreach (var entry in entries)
            {
                await ExecuteAsync(connection, transaction, "INSERT INTO sitelink_audit (at, actor, action, target, status, detail) VALUES (@at, @actor, @action, @target, @status, @detail)",
                    cancellationToken, ("at", entry.At.ToUnixTimeMilliseconds()), ("actor", entry.Actor), ("action", entry.Action), ("target", entry.Target), ("status", (long)entry.Status), ("detail", entry.Detail)).ConfigureAwait(false);
            }
        }, "sitelink_audit", MaxAuditEntries, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Audit entries, newest first, older than <paramref name="before"/> (an entry id) when given.</summary>
    public async Task<StorePage<AuditEntry>> ListAuditAsync(long? before, int limit, CancellationToken cancellationToken)
    {
        limit = Math.Clamp(limit, 1, MaxPageSize);
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        using var command = Command(connection, null,
            "SELECT id, at, actor, action, target, status, detail FROM sitelink_audit" + (before is null ? "" : " WHERE id < @before") + " ORDER BY id DESC LIMIT @limit",
            ("before", before), ("limit", (long)limit + 1));
        var items = new List<AuditEntry>();
        using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                items.Add(new AuditEntry(reader.GetInt64(0), FromUnixMs(reader.GetInt64(1)), reader.GetString(2), reader.GetString(3), reader.GetString(4),
                    (int)reader.GetInt64(5), reader.IsDBNull(6) ? "" : reader.GetString(6)));
            }
        }

        return PageOf(items, limit, e => e.Id.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Keeps an event that could not be delivered.</summary>
    public Task AddDeadLetterAsync(StoredDeadLetter letter, CancellationToken cancellationToken) =>
        AppendAsync((connection, transaction) => ExecuteAsync(connection, transaction,
            "INSERT INTO sitelink_dead_letters (subscription, tenant, event_id, event_type, payload, error, attempts, at) VALUES (@subscription, @tenant, @event_id, @event_type, @payload, @error, @attempts, @at)",
            cancellationToken, ("subscription", letter.Subscription), ("tenant", letter.Tenant), ("event_id", letter.EventId), ("event_type", letter.EventType),
            ("payload", letter.Payload), ("error", letter.Error), ("attempts", (long)letter.Attempts), ("at", letter.At.ToUnixTimeMilliseconds())), "sitelink_dead_letters", MaxDeadLetters, cancellationToken);

    /// <summary>Dead letters, newest first, of one subscription and/or tenant when given, older than <paramref name="before"/>.</summary>
    public async Task<StorePage<StoredDeadLetter>> ListDeadLettersAsync(string? subscription, string? tenant, long? before, int limit, CancellationToken cancellationToken)
    {
        limit = Math.Clamp(limit, 1, MaxPageSize);
        using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
        var conditions = new List<string>();
        if (subscription is not null)
        {
            conditions.Add("subscription = @subscription");
        }

        if (tenant is not null)
        {
            conditions.Add("tenant = @tenant");
        }

        if (before is not null)
        {
            conditions.Add("id < @before");
        }

        using var command = Command(connection, null,
            "SELECT id, subscription, tenant, event_id, event_type, payload, error, attempts, at FROM sitelink_dead_letters"
            + (conditions.Count == 0 ? "" : " WHERE " + string.Join(" AND ", conditions)) + " ORDER BY id DESC LIMIT @limit",
            ("subscription", subscription), ("tenant", tenant), ("before", before), ("limit", (long)limit + 1));
        var items = new List<StoredDeadLetter>();
        using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                items.Add(new StoredDeadLetter(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetString(4),
                    reader.GetString(5), reader.GetString(6), (int)reader.GetInt64(7), FromUnixMs(reader.GetInt64(8))));
            }
        }

        return PageOf(items, limit, d => d.Id.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Closes the store's connections.</summary>
    public async ValueTask DisposeAsync()
    {
        await _dialect.DisposeAsync().ConfigureAwait(false);
        _writeGate.Dispose();
    }

    /// <summary>
    /// A page from a query that asked for <paramref name="limit"/> + 1 rows: the extra row only says there is more, and
    /// the page's last item is where the next one starts.
    /// </summary>
    private static StorePage<T> PageOf<T>(List<T> items, int limit, Func<T, string> cursorOf) =>
        items.Count > limit ? new StorePage<T>([.. items.Take(limit)], cursorOf(items[limit - 1])) : new StorePage<T>(items, null);

    private const string ResourceColumns = "kind, name, tenant, body, version, created_at, updated_at";

    private long Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private static DateTimeOffset FromUnixMs(long value) => DateTimeOffset.FromUnixTimeMilliseconds(value);

    /// <summary>Runs a resource write in a transaction that also bumps the revision (the written resource's new version).</summary>
    private async Task<T> WriteAsync<T>(Func<DbConnection, DbTransaction, long, long, Task<T>> write, CancellationToken cancellationToken)
    {
        await _writeGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
            using var transaction = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
            var revision = Convert.ToInt64(await ScalarAsync(connection, transaction, "UPDATE sitelink_meta SET value = value + 1 WHERE name = 'revision' RETURNING value", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
            var result = await write(connection, transaction, revision, Now()).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            // Under the write gate: revisions this store wrote only grow.
            Volatile.Write(ref _lastWritten, revision);
            return result;
        }
        finally
        {
            _writeGate.Release();
        }
    }

    /// <summary>Appends to a log table, pruning it to its newest <paramref name="keep"/> rows now and then.</summary>
    private async Task AppendAsync(Func<DbConnection, DbTransaction, Task> append, string table, int keep, CancellationToken cancellationToken)
    {
        await _writeGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            using var connection = await _dialect.OpenAsync(cancellationToken).ConfigureAwait(false);
            using var transaction = await BeginWriteAsync(connection, cancellationToken).ConfigureAwait(false);
            await append(connection, transaction).ConfigureAwait(false);
            if (Interlocked.Increment(ref _writes) % 64 == 0)
            {
                await ExecuteAsync(connection, transaction, $"DELETE FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - @keep", cancellationToken, ("keep", (long)keep)).ConfigureAwait(false);
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _writeGate.Release();
        }
    }

    private static async Task<DbTransaction> BeginWriteAsync(DbConnection connection, CancellationToken cancellationToken) =>
        await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken).ConfigureAwait(false);

    private static async Task<StoredResource> RequireAsync(DbConnection connection, DbTransaction transaction, string kind, string name, long? expectedVersion, CancellationToken cancellationToken)
    {
        var found = await QueryResourcesAsync(connection, transaction, $"SELECT {ResourceColumns} FROM sitelink_resources WHERE kind = @kind AND name = @name", cancellationToken, ("kind", kind), ("name", name)).ConfigureAwait(false);
        if (found.Count == 0)
        {
            throw new StoreNotFoundException($"no {kind} named '{name}'");
        }

        if (expectedVersion is { } expected && found[0].Version != expected)
        {
            throw new StorePreconditionException(found[0].Version);
        }

        return found[0];
    }

    private static async Task<List<StoredResource>> QueryResourcesAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        using var command = Command(connection, transaction, sql, parameters);
        var items = new List<StoredResource>();
        using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            items.Add(new StoredResource(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetInt64(4),
                FromUnixMs(reader.GetInt64(5)), FromUnixMs(reader.GetInt64(6))));
        }

        return items;
    }

    private static async Task ExecuteAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        using var command = Command(connection, transaction, sql, parameters);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<object?> ScalarAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        using var command = Command(connection, transaction, sql, parameters);
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A command with the parameters its text uses (the others, e.g. an absent filter's, are left out).</summary>
    private static DbCommand Command(DbConnection connection, DbTransaction? transaction, string sql, params (string Name, object? Value)[] parameters)
    {
        var command = connection.CreateCommand();
#pragma warning disable CA2100 // The text is this class's own constants; every value is a parameter.
        command.CommandText = sql;
#pragma warning restore CA2100
        command.Transaction = transaction;
        foreach (var (name, value) in parameters)
        {
            if (!sql.Contains("@" + name, StringComparison.Ordinal))
            {
                continue;
            }

            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }

        return command;
    }
}
