using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The store under real relay processes: two standalone relays on one real PostgreSQL see each other's changes within
/// 2 s (a token created on A lets an agent in on B; revoked on A, it ends the agent's session on B), and a standalone
/// relay's default SQLite file keeps what the admin API created across a restart.
/// </summary>
[TestFixture]
[Category("Store")]
[NonParallelizable]
public sealed class StoreReplicaTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private DirectoryInfo _folder = null!;

    [SetUp]
    public void SetUp() => _folder = Directory.CreateTempSubdirectory("sitelink-store-replicas-");

    [TearDown]
    public void TearDown() => _folder.Delete(recursive: true);

    private sealed record Replica(ProcessRunner Process, Uri AgentUrl, Uri AdminUrl, string Pin) : IAsyncDisposable
    {
        public AdminClient Admin() => new(AdminUrl, Pin);

        public ValueTask DisposeAsync() => Process.DisposeAsync();
    }

    /// <summary>A relay process with the admin API on, its store as given, and no configured token.</summary>
    private async Task<Replica> StartRelayAsync(string id, object store)
    {
        var config = Path.Combine(_folder.FullName, $"{id}.json");
        await File.WriteAllTextAsync(config, JsonSerializer.Serialize(new
        {
            Logging = new { LogLevel = new { Default = "Information" } },
            Relay = new
            {
                RelayId = id,
                AgentListen = "127.0.0.1:0",
                Tls = new { DevelopmentCertificatePath = Path.Combine(_folder.FullName, $"{id}.pfx") },
                Admin = new { Listen = "127.0.0.1:0", Keys = new[] { new { Name = "ops", Key = AdminClient.FullKey, Scope = "full" } } },
                Store = store,
            },
        }));
        var process = ProcessRunner.Dotnet(ProcessRunner.RelayDll, ["--config", config], _folder.FullName);
        var agentUrl = (await process.WaitForLineAsync(@"listening for agents on (https://127\.0\.0\.1:\d+)/", StartTimeout)).Groups[1].Value;
        var pin = (await process.WaitForLineAsync(@"pin it in agents\): ([0-9A-F]{64})", StartTimeout)).Groups[1].Value;
        var admin = (await process.WaitForLineAsync(@"Admin API on (https://127\.0\.0\.1:\d+/)", StartTimeout)).Groups[1].Value;
        return new Replica(process, new Uri(agentUrl), new Uri(admin), pin);
    }

    private static TunnelSessionOptions Agent(Replica relay, string secret) => new()
    {
        RelayUrl = relay.AgentUrl,
        AuthToken = secret,
        PinnedCertificateSha256 = relay.Pin,
        ClientId = "replica-agent",
    };

    [Test]
    public async Task Two_relays_on_one_PostgreSQL_see_a_new_token_and_its_revocation_within_two_seconds()
    {
        await using var postgres = await PostgresServer.StartAsync();
        var database = await postgres.CreateDatabaseAsync();
        var store = new { Provider = "postgres", ConnectionString = database, PollInterval = "00:00:00.250" };
        await using var a = await StartRelayAsync("relay-a", store);
        await using var b = await StartRelayAsync("relay-b", store);
        using var adminA = a.Admin();
        using var adminB = b.Admin();

        await adminA.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "acme" });
        var created = await adminA.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tokens", new { name = "acme-prod", tenant = "acme", allow = new[] { "*" } });
        var secret = (string)created!["secret"]!;

        // The token, created on A, lets an agent in on B once B has seen it.
        var clock = Stopwatch.StartNew();
        ITunnelSession? session = null;
        while (session is null)
        {
            try
            {
                session = await TunnelSession.ConnectAsync(Agent(b, secret)).DefaultTimeout();
            }
            catch (TunnelAuthenticationException) when (clock.Elapsed < TimeSpan.FromSeconds(2))
            {
                await Task.Delay(50);
            }
        }

        var seen = clock.Elapsed;
        await using var _ = session;
        TestContext.Out.WriteLine($"token created on A accepted by B after {seen.TotalMilliseconds:F0} ms");
        Assert.That(seen, Is.LessThan(TimeSpan.FromSeconds(2)));
        Assert.That((await adminA.GetAsync("/v1/tenants/acme")).Status, Is.EqualTo(HttpStatusCode.OK));
        Assert.That((await adminB.GetAsync("/v1/sessions")).Body!["items"]!.AsArray().Single()!["relay"]!.GetValue<string>(), Is.EqualTo("relay-b"));

        // Revoked on A: the session on B ends within 2 s.
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        session.StateChanged += (_, e) =>
        {
            if (e.State != TunnelSessionState.Connected)
            {
                ended.TrySetResult();
            }
        };
        clock.Restart();
        await adminA.ExpectAsync(HttpStatusCode.OK, HttpMethod.Post, "/v1/tokens/acme-prod/revoke");
        await ended.Task.DefaultTimeout();
        TestContext.Out.WriteLine($"token revoked on A ended the session on B after {clock.Elapsed.TotalMilliseconds:F0} ms");
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)));
        await Eventually.WaitUntilAsync(async () => (await adminB.GetAsync("/v1/sessions")).Body!["items"]!.AsArray().Count == 0, "B lists no session");
        Assert.That((bool)(await adminB.GetAsync("/v1/tokens/acme-prod")).Body!["active"]!, Is.False);
    }

    [Test]
    public async Task A_standalone_relay_keeps_what_the_API_created_in_its_SQLite_file_across_a_restart()
    {
        var file = Path.Combine(_folder.FullName, "relay.db");
        var store = new { Path = file };
        string secret;
        await using (var first = await StartRelayAsync("relay", store))
        {
            using var admin = first.Admin();
            await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tenants", new { id = "acme" });
            secret = (string)(await admin.ExpectAsync(HttpStatusCode.Created, HttpMethod.Post, "/v1/tokens", new { name = "acme-prod", tenant = "acme", allow = new[] { "*" } }))!["secret"]!;
        }

        Assert.That(File.Exists(file), Is.True);
        await using var second = await StartRelayAsync("relay", store);
        await using var session = await TunnelSession.ConnectAsync(Agent(second, secret)).DefaultTimeout();
        Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
        using var again = second.Admin();
        var audit = (await again.GetAsync("/v1/audit")).Body!["items"]!.AsArray();
        Assert.That(audit.Select(e => (string)e!["action"]!), Does.Contain("POST /v1/tokens"), "the audit log survived the restart too");
        Assert.That(audit.Count, Is.GreaterThanOrEqualTo(2).And.LessThan(100), string.Format(CultureInfo.InvariantCulture, "{0} entries", audit.Count));
    }
}
