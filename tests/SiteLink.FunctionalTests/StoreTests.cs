using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.ControlPlane.Store;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The control plane's store on both of its databases: SQLite (a file, and in memory) and a real PostgreSQL server
/// started in a temporary folder. The same tests run against each.
/// </summary>
[TestFixture]
[Category("Store")]
[NonParallelizable]
public sealed class StoreTests
{
    private PostgresServer? _postgres;
    private DirectoryInfo _folder = null!;

    [OneTimeSetUp]
    public async Task StartPostgres() => _postgres = await PostgresServer.StartAsync();

    [OneTimeTearDown]
    public async Task StopPostgres()
    {
        if (_postgres is not null)
        {
            await _postgres.DisposeAsync();
        }
    }

    [SetUp]
    public void SetUp() => _folder = Directory.CreateTempSubdirectory("sitelink-store-");

    [TearDown]
    public void TearDown() => _folder.Delete(recursive: true);

    public static readonly string[] Providers = ["sqlite", "postgres"];

    /// <summary>A connection string to a new, empty database of <paramref name="provider"/>.</summary>
    private async Task<string> NewDatabaseAsync(string provider) => provider == "sqlite"
        ? $"Data Source={Path.Combine(_folder.FullName, Guid.NewGuid().ToString("N") + ".db")}"
        : await _postgres!.CreateDatabaseAsync();

    private static Task<ControlStore> OpenAsync(string provider, string connectionString) =>
        ControlStore.OpenAsync(provider, connectionString, TimeProvider.System, CancellationToken.None).DefaultTimeout();

    [TestCaseSource(nameof(Providers))]
    public async Task Migrations_apply_once_even_when_replicas_start_together(string provider)
    {
        var database = await NewDatabaseAsync(provider);
        // Four relays starting at once on an empty database: one applies the schema, the others find it applied.
        var stores = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => OpenAsync(provider, database))).DefaultTimeout();
        try
        {
            foreach (var store in stores)
            {
                Assert.That(await store.RevisionAsync(CancellationToken.None).DefaultTimeout(), Is.EqualTo(0));
            }
        }
        finally
        {
            foreach (var store in stores)
            {
                await store.DisposeAsync();
            }
        }

        // Reopening an up-to-date database changes nothing.
        await using var again = await OpenAsync(provider, database);
        Assert.That((await again.LoadAsync(CancellationToken.None).DefaultTimeout()).Resources, Is.Empty);
    }

    [TestCaseSource(nameof(Providers))]
    public async Task Writes_are_versioned_and_refused_when_they_conflict(string provider)
    {
        await using var store = await OpenAsync(provider, await NewDatabaseAsync(provider));
        var created = await store.CreateAsync(ResourceKinds.Tenant, "acme", "acme", """{"displayName":"Acme"}""", CancellationToken.None).DefaultTimeout();
        Assert.That(created.Version, Is.EqualTo(1));
        Assert.ThrowsAsync<StoreConflictException>(() => store.CreateAsync(ResourceKinds.Tenant, "acme", "acme", "{}", CancellationToken.None).DefaultTimeout());

        // The same name under another kind is another resource.
        await store.CreateAsync(ResourceKinds.Token, "acme", "acme", "{}", CancellationToken.None).DefaultTimeout();

        var updated = await store.UpdateAsync(ResourceKinds.Tenant, "acme", """{"displayName":"Acme Corp"}""", created.Version, CancellationToken.None).DefaultTimeout();
        Assert.That(updated.Version, Is.GreaterThan(created.Version));
        Assert.That((await store.GetAsync(ResourceKinds.Tenant, "acme", CancellationToken.None).DefaultTimeout())!.Body, Does.Contain("Acme Corp"));

        // A writer that read the old version is refused and told the current one.
        var stale = Assert.ThrowsAsync<StorePreconditionException>(() => store.UpdateAsync(ResourceKinds.Tenant, "acme", "{}", created.Version, CancellationToken.None).DefaultTimeout());
        Assert.That(stale!.Current, Is.EqualTo(updated.Version));
        Assert.ThrowsAsync<StorePreconditionException>(() => store.DeleteAsync(ResourceKinds.Tenant, "acme", created.Version, CancellationToken.None).DefaultTimeout());
        Assert.ThrowsAsync<StoreNotFoundException>(() => store.UpdateAsync(ResourceKinds.Tenant, "nobody", "{}", null, CancellationToken.None).DefaultTimeout());

        await store.DeleteAsync(ResourceKinds.Tenant, "acme", updated.Version, CancellationToken.None).DefaultTimeout();
        Assert.That(await store.GetAsync(ResourceKinds.Tenant, "acme", CancellationToken.None).DefaultTimeout(), Is.Null);
        Assert.ThrowsAsync<StoreNotFoundException>(() => store.DeleteAsync(ResourceKinds.Tenant, "acme", null, CancellationToken.None).DefaultTimeout());
        // Four writes succeeded, each one revision; the refused ones changed nothing.
        Assert.That(await store.RevisionAsync(CancellationToken.None).DefaultTimeout(), Is.EqualTo(4));
    }

    [TestCaseSource(nameof(Providers))]
    public async Task Listings_page_in_name_order_and_filter_by_tenant(string provider)
    {
        await using var store = await OpenAsync(provider, await NewDatabaseAsync(provider));
        for (var i = 0; i < 25; i++)
        {
            await store.CreateAsync(ResourceKinds.Token, $"token-{i:D2}", i % 5 == 0 ? "beta" : "acme", "{}", CancellationToken.None).DefaultTimeout();
        }

        var names = new List<string>();
        string? after = null;
        var pages = 0;
        do
        {
            var page = await store.ListAsync(ResourceKinds.Token, "acme", after, 7, CancellationToken.None).DefaultTimeout();
            Assert.That(page.Items, Has.Count.LessThanOrEqualTo(7));
            names.AddRange(page.Items.Select(i => i.Name));
            after = page.Next;
            pages++;
        }
        while (after is not null);

        Assert.That(names, Has.Count.EqualTo(20));
        Assert.That(names, Is.Ordered.And.Unique);
        Assert.That(pages, Is.EqualTo(3));
        Assert.That(await store.CountAsync(ResourceKinds.Token, "beta", CancellationToken.None).DefaultTimeout(), Is.EqualTo(5));
        Assert.That((await store.ListAsync(ResourceKinds.Token, null, null, 1000, CancellationToken.None).DefaultTimeout()).Items, Has.Count.EqualTo(25));
    }

    [TestCaseSource(nameof(Providers))]
    public async Task Two_relays_on_one_database_see_each_others_writes(string provider)
    {
        var database = await NewDatabaseAsync(provider);
        await using var a = await OpenAsync(provider, database);
        await using var b = await OpenAsync(provider, database);
        var before = await b.RevisionAsync(CancellationToken.None).DefaultTimeout();
        await a.CreateAsync(ResourceKinds.Endpoint, "acme-db", "acme", """{"protocol":"tcp"}""", CancellationToken.None).DefaultTimeout();
        Assert.That(await b.RevisionAsync(CancellationToken.None).DefaultTimeout(), Is.GreaterThan(before));
        var snapshot = await b.LoadAsync(CancellationToken.None).DefaultTimeout();
        Assert.That(snapshot.Resources.Single().Name, Is.EqualTo("acme-db"));
        Assert.That(snapshot.Revision, Is.EqualTo(await a.RevisionAsync(CancellationToken.None).DefaultTimeout()));
    }

    [TestCaseSource(nameof(Providers))]
    public async Task Concurrent_writers_each_get_their_own_revision(string provider)
    {
        var database = await NewDatabaseAsync(provider);
        await using var a = await OpenAsync(provider, database);
        await using var b = await OpenAsync(provider, database);
        var written = await Task.WhenAll(Enumerable.Range(0, 40).Select(i =>
            (i % 2 == 0 ? a : b).CreateAsync(ResourceKinds.Tenant, $"t{i}", $"t{i}", "{}", CancellationToken.None))).DefaultTimeout();
        Assert.That(written.Select(w => w.Version), Is.Unique);
        Assert.That(await a.RevisionAsync(CancellationToken.None).DefaultTimeout(), Is.EqualTo(40));
    }

    [TestCaseSource(nameof(Providers))]
    public async Task Audit_and_dead_letters_are_kept_newest_first(string provider)
    {
        await using var store = await OpenAsync(provider, await NewDatabaseAsync(provider));
        var now = DateTimeOffset.UtcNow;
        await store.AppendAuditAsync([.. Enumerable.Range(0, 12).Select(i => new AuditEntry(0, now.AddSeconds(i), "key:ops", "POST /v1/tenants", $"tenant/t{i}", 201, ""))], CancellationToken.None).DefaultTimeout();
        var first = await store.ListAuditAsync(null, 5, CancellationToken.None).DefaultTimeout();
        Assert.That(first.Items.Select(e => e.Target), Is.EqualTo(new[] { "tenant/t11", "tenant/t10", "tenant/t9", "tenant/t8", "tenant/t7" }));
        var second = await store.ListAuditAsync(long.Parse(first.Next!, System.Globalization.CultureInfo.InvariantCulture), 100, CancellationToken.None).DefaultTimeout();
        Assert.That(second.Items, Has.Count.EqualTo(7));
        Assert.That(second.Next, Is.Null);
        Assert.That(second.Items[0].Actor, Is.EqualTo("key:ops"));
        Assert.That(second.Items[0].Status, Is.EqualTo(201));

        await store.AddDeadLetterAsync(new StoredDeadLetter(0, "sub_1", "acme", "evt_1", "session.connected", "{}", "HTTP 503", 8, now), CancellationToken.None).DefaultTimeout();
        await store.AddDeadLetterAsync(new StoredDeadLetter(0, "sub_2", "beta", "evt_2", "session.disconnected", "{}", "queue full", 0, now), CancellationToken.None).DefaultTimeout();
        var letters = await store.ListDeadLettersAsync("sub_1", null, null, 10, CancellationToken.None).DefaultTimeout();
        Assert.That(letters.Items.Single().Error, Is.EqualTo("HTTP 503"));
        Assert.That((await store.ListDeadLettersAsync(null, "beta", null, 10, CancellationToken.None).DefaultTimeout()).Items.Single().EventId, Is.EqualTo("evt_2"));
    }

    [Test]
    public async Task A_sqlite_file_keeps_everything_across_restarts()
    {
        var database = await NewDatabaseAsync("sqlite");
        await using (var store = await OpenAsync("sqlite", database))
        {
            await store.CreateAsync(ResourceKinds.Tenant, "acme", "acme", "{}", CancellationToken.None).DefaultTimeout();
        }

        await using var reopened = await OpenAsync("sqlite", database);
        Assert.That(await reopened.GetAsync(ResourceKinds.Tenant, "acme", CancellationToken.None).DefaultTimeout(), Is.Not.Null);
        Assert.That(await reopened.RevisionAsync(CancellationToken.None).DefaultTimeout(), Is.EqualTo(1));
    }

    [Test]
    public async Task An_in_memory_sqlite_store_works_without_a_file()
    {
        await using var store = await OpenAsync("sqlite", $"Data Source=sitelink-{Guid.NewGuid():N};Mode=Memory;Cache=Shared");
        await store.CreateAsync(ResourceKinds.Tenant, "acme", "acme", "{}", CancellationToken.None).DefaultTimeout();
        Assert.That((await store.LoadAsync(CancellationToken.None).DefaultTimeout()).Resources, Has.Count.EqualTo(1));
        Assert.That(_folder.GetFiles(), Is.Empty);
    }

    [TestCaseSource(nameof(Providers))]
    public async Task A_relay_loads_only_what_changed_since_the_revision_it_applied(string provider)
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var store = await ControlStore.OpenAsync(provider, await NewDatabaseAsync(provider), time, CancellationToken.None).DefaultTimeout();
        await store.CreateAsync(ResourceKinds.Tenant, "acme", "acme", "{}", CancellationToken.None).DefaultTimeout();
        await store.CreateAsync(ResourceKinds.Token, "kept", "acme", "{}", CancellationToken.None).DefaultTimeout();
        await store.CreateAsync(ResourceKinds.Token, "gone", "acme", "{}", CancellationToken.None).DefaultTimeout();
        var applied = await store.RevisionAsync(CancellationToken.None).DefaultTimeout();

        await store.UpdateAsync(ResourceKinds.Token, "kept", """{"changed":true}""", null, CancellationToken.None).DefaultTimeout();
        await store.DeleteAsync(ResourceKinds.Token, "gone", null, CancellationToken.None).DefaultTimeout();
        await store.CreateAsync(ResourceKinds.Token, "new", "acme", "{}", CancellationToken.None).DefaultTimeout();
        var changes = await store.LoadChangesAsync(applied, CancellationToken.None).DefaultTimeout();
        Assert.That(changes, Is.Not.Null);
        Assert.That(changes!.Revision, Is.EqualTo(applied + 3));
        Assert.That(changes.Written.Select(r => r.Name), Is.EquivalentTo(new[] { "kept", "new" }));
        Assert.That(changes.Deleted, Is.EqualTo(new[] { (ResourceKinds.Token, "gone") }));

        // Deleted, then created again: the new row is what a relay sees, not the deletion.
        var before = changes.Revision;
        await store.CreateAsync(ResourceKinds.Token, "gone", "acme", "{}", CancellationToken.None).DefaultTimeout();
        var again = await store.LoadChangesAsync(before, CancellationToken.None).DefaultTimeout();
        Assert.That(again!.Written.Single().Name, Is.EqualTo("gone"));
        Assert.That(again.Deleted, Is.Empty);
        Assert.That((await store.LoadChangesAsync(again.Revision, CancellationToken.None).DefaultTimeout())!.Written, Is.Empty);

        // Tombstones older than a day are pruned; a relay that applied a revision before them loads everything.
        for (var i = 0; i < 64; i++)
        {
            await store.CreateAsync(ResourceKinds.Token, $"churn-{i}", "acme", "{}", CancellationToken.None).DefaultTimeout();
            await store.DeleteAsync(ResourceKinds.Token, $"churn-{i}", null, CancellationToken.None).DefaultTimeout();
            if (i == 31)
            {
                time.Advance(ControlStore.TombstoneLifetime + TimeSpan.FromMinutes(1));
            }
        }

        Assert.That(await store.LoadChangesAsync(applied, CancellationToken.None).DefaultTimeout(), Is.Null, "too far behind: load everything");
        var recent = await store.RevisionAsync(CancellationToken.None).DefaultTimeout();
        Assert.That(await store.LoadChangesAsync(recent, CancellationToken.None).DefaultTimeout(), Is.Not.Null, "a relay that is up to date still loads changes only");
    }
}
