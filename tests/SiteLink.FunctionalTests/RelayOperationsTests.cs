using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;
using SiteLink.Relay.Security;

namespace SiteLink.FunctionalTests;

/// <summary>Running the relay as an operator does: revoking tokens by editing its file, a busy port, what it says at start.</summary>
[TestFixture]
[Category("Hostile")]
public sealed class RelayOperationsTests
{
    private const string TokenA = "acme-a-token-q3Vx9LmT2pRkA7bYz1W";
    private const string TokenB = "acme-b-token-Kd82nQ0xLs5PzT7vYw3";
    private string _directory = null!;

    [SetUp]
    public void CreateDirectory() => _directory = Directory.CreateTempSubdirectory("sitelink-relay-ops-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_directory, recursive: true);

    private static object Config(string agentListen, int cloudPort, params (string Name, string Secret)[] tokens) => new
    {
        Relay = new
        {
            RelayId = "ops-relay",
            AgentListen = agentListen,
            Tokens = tokens.Select(t => new { t.Name, Token = t.Secret, Tenant = "acme", Allow = new[] { "*" } }).ToArray(),
            CloudEndpoints = new[] { new { Name = "echo", Listen = $"127.0.0.1:{cloudPort}", Tenant = "acme", Endpoint = "echo" } },
        },
    };

    private static void Write(string path, object config) => File.WriteAllText(path, JsonSerializer.Serialize(config));

    [Test]
    public async Task TokenRemovedFromTheConfigurationFile_EndsItsSessionsAtOnce_OthersGoOn_AndABadEditIsRefused()
    {
        var path = Path.Combine(_directory, "relay.json");
        Write(path, Config("127.0.0.1:0", 0, ("acme-a", TokenA), ("acme-b", TokenB)));
        var logs = new TestLogSink();

        // As the standalone relay does (Program.cs): the file watched, the relay built from it.
        var (started, certificate) = await FileRelay.StartAsync(path, logs);
        await using var app = started;
        var counters = app.Services.GetRequiredService<SiteLink.Relay.Diagnostics.RelayCounters>();
        var cloud = RelayApplication.CloudEndpoints(app)["echo"];
        await using var upstream = TestUpstream.Echo();

        TunnelSessionOptions Agent(string token) => new()
        {
            RelayUrl = RelayApplication.AgentUrl(app, tls: true),
            AuthToken = token,
            PinnedCertificateSha256 = RelayCertificate.Sha256Of(certificate),
            LoggerFactory = logs.CreateFactory(),
        };

        await using var a = await TunnelSession.ConnectAsync(Agent(TokenA)).DefaultTimeout();
        await using var b = await TunnelSession.ConnectAsync(Agent(TokenB)).DefaultTimeout();
        await b.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        // The operator removes token A from the file.
        Write(path, Config("127.0.0.1:0", 0, ("acme-b", TokenB)));
        await Eventually.WaitUntilAsync(() => a.State == TunnelSessionState.Faulted, "token A's session ended and is refused");

        // Then saves a broken edit: refused as a whole, token B keeps working.
        Write(path, Config("127.0.0.1:0", 0, ("acme-b", TokenB), ("short", "too-short")));
        static bool Rejection(LogEntry e) => e.Category.EndsWith("TokenReloader", StringComparison.Ordinal) && e.EventId.Id == 8;
        await Eventually.WaitUntilAsync(() => logs.Entries.Any(Rejection), "the bad edit is reported");
        // And an edit of another setting that does not even convert: reported, and the relay runs on.
        File.WriteAllText(path, JsonSerializer.Serialize(Config("127.0.0.1:0", 0, ("acme-b", TokenB))).Replace("\"RelayId\"", "\"Limits\":{\"HelloTimeout\":\"ten seconds\"},\"RelayId\"", StringComparison.Ordinal));
        await Eventually.WaitUntilAsync(() => logs.Entries.Any(e => Rejection(e) && e.Message.Contains("could not be read", StringComparison.Ordinal)), "the unreadable edit is reported");
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(cloud).DefaultTimeout();
        var payload = SocketTestExtensions.RandomBytes(100_000);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();
        await app.StopAsync().DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(a.Fault, Is.InstanceOf<TunnelAuthenticationException>());
            Assert.That(counters.SessionsEnded("revoked"), Is.EqualTo(1));
            Assert.That(echoed, Is.EqualTo(payload), "token B's session carried on through both edits");
            Assert.That(logs.Entries.Where(Rejection).Select(e => e.Message), Has.Exactly(1).Contains("too short"), "one report per bad edit");
            Assert.That(logs.Entries.Any(e => e.Message.Contains(TokenA, StringComparison.Ordinal) || e.Message.Contains("too-short", StringComparison.Ordinal)), Is.False, "no secret is logged");
        });
    }

    [Test]
    public async Task AgentPortInUse_TheRelayExits_WithOneLineNamingTheAddress()
    {
        using var busy = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        busy.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        busy.Listen();
        var port = ((IPEndPoint)busy.LocalEndPoint!).Port;
        var path = Path.Combine(_directory, "relay.json");
        Write(path, Config($"127.0.0.1:{port}", 0, ("acme-a", TokenA)));

        var (exitCode, stdout, stderr) = await RunRelayAsync("--config", path);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(3));
            Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1), "one line, no stack trace: " + stderr);
            Assert.That(stderr, Does.Contain($"The agent port cannot listen on 127.0.0.1:{port}").And.Contain("in use"));
            Assert.That(stdout, Does.Not.Contain("   at "));
        });
    }

    [Test]
    public async Task CloudEndpointPortInUse_TheRelayExits_WithOneLineNamingTheEndpoint()
    {
        using var busy = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        busy.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        busy.Listen();
        var port = ((IPEndPoint)busy.LocalEndPoint!).Port;
        var path = Path.Combine(_directory, "relay.json");
        Write(path, Config("127.0.0.1:0", port, ("acme-a", TokenA)));

        var (exitCode, _, stderr) = await RunRelayAsync("--config", path);

        Assert.Multiple(() =>
        {
            Assert.That(exitCode, Is.EqualTo(3));
            Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1), "one line, no stack trace: " + stderr);
            Assert.That(stderr, Does.Contain("Cloud endpoint 'echo'").And.Contain($"127.0.0.1:{port}"));
        });
    }

    [Test]
    public async Task AtStart_TheRelaySaysWhichCertificateItServes_AndKeepsNoPlaintextToken()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);

        var kept = relay.Server.Services.GetRequiredService<RelayOptions>();
        var served = relay.Logs.Entries.SingleOrDefault(e => e.EventId.Id == 4);

        Assert.Multiple(() =>
        {
            Assert.That(served?.Message, Does.Contain("self-signed development certificate").And.Contain(relay.Server.CertificateSha256));
            Assert.That(kept.Tokens.Select(t => t.Token), Has.All.Null, "the relay keeps hashes only");
            Assert.That(kept.Tokens.Select(t => t.Sha256), Has.All.Length.EqualTo(64));
        });
    }

    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunRelayAsync(params string[] args)
    {
        var relay = Path.Combine(AppContext.BaseDirectory, "SiteLink.Relay.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(relay);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["Logging__LogLevel__Default"] = "Warning";
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().DefaultTimeout();
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        return (process.ExitCode, await stdout.DefaultTimeout(), await stderr.DefaultTimeout());
    }
}
