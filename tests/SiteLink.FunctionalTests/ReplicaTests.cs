using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// C9, scale-out: two relay processes with the same configuration behind a real haproxy (TCP mode, health-checked) for
/// the public side, the agent connected to both (RelayUrls). A public connection landing on either replica reaches the
/// agent; when one replica is killed, clients that connect again get through the other.
/// </summary>
[TestFixture]
[Category("Replicas")]
[NonParallelizable]
public sealed class ReplicaTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private const string Token = "replica-token-0123456789abcdef";

    private DirectoryInfo _folder = null!;

    [SetUp]
    public void SetUp() => _folder = Directory.CreateTempSubdirectory("sitelink-replicas-");

    [TearDown]
    public void TearDown() => _folder.Delete(recursive: true);

    private sealed record Replica(ProcessRunner Process, Uri AgentUrl, int PublicPort, string Pin);

    /// <summary>A relay process with the shared configuration (same tokens, same endpoints, same certificate file).</summary>
    private async Task<Replica> StartReplicaAsync(string id)
    {
        var config = Path.Combine(_folder.FullName, $"{id}.json");
        await File.WriteAllTextAsync(config, JsonSerializer.Serialize(new
        {
            Logging = new { LogLevel = new { Default = "Information" } },
            Relay = new
            {
                RelayId = id,
                AgentListen = "127.0.0.1:0",
                Tls = new { DevelopmentCertificatePath = Path.Combine(_folder.FullName, "relay.pfx") },
                Tokens = new[] { new { Name = "acme", Token, Tenant = "acme", Allow = new[] { "*" } } },
                CloudEndpoints = new[] { new { Name = "echo", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "echo" } },
            },
        }));
        var process = ProcessRunner.Dotnet(ProcessRunner.RelayDll, ["--config", config], _folder.FullName);
        var agentUrl = (await process.WaitForLineAsync(@"listening for agents on (https://127\.0\.0\.1:\d+)/", StartTimeout)).Groups[1].Value;
        var pin = (await process.WaitForLineAsync(@"pin it in agents\): ([0-9A-F]{64})", StartTimeout)).Groups[1].Value;
        var port = int.Parse((await process.WaitForLineAsync(@"Cloud endpoint 'echo' on tcp://127\.0\.0\.1:(\d+)", StartTimeout)).Groups[1].Value, CultureInfo.InvariantCulture);
        return new Replica(process, new Uri(agentUrl), port, pin);
    }

    /// <summary>haproxy in TCP mode in front of the replicas' public ports, checking each every 200 ms.</summary>
    private async Task<(ProcessRunner Process, int Port)> StartBalancerAsync(params Replica[] replicas)
    {
        var executable = new[] { "/usr/sbin/haproxy", "/usr/bin/haproxy" }.FirstOrDefault(File.Exists);
        if (executable is null)
        {
            RealServers.Missing("haproxy is not installed (sudo apt-get install haproxy; .ci/run installs it).");
        }

        for (var attempt = 1; ; attempt++)
        {
            var port = RealServers.FreePort();
            var servers = string.Join(Environment.NewLine, replicas.Select((r, i) =>
                $"    server replica{i} 127.0.0.1:{r.PublicPort} check inter 200ms fall 1 rise 2"));
            var config = Path.Combine(_folder.FullName, "haproxy.cfg");
            await File.WriteAllTextAsync(config, $"""
                global
                    log stderr format raw local0 notice
                defaults
                    mode tcp
                    timeout connect 2s
                    timeout client 30s
                    timeout server 30s
                frontend public
                    bind 127.0.0.1:{port}
                    default_backend replicas
                backend replicas
                    balance roundrobin
                    option redispatch
                    retries 2
                {servers}

                """);
            var process = ProcessRunner.Start(executable!, ["-f", config, "-db"], _folder.FullName);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (DateTime.UtcNow < deadline && !process.HasExited)
            {
                if (await EchoesAsync(port, 1024))
                {
                    return (process, port);
                }

                await Task.Delay(100);
            }

            var output = process.AllOutput;
            await process.DisposeAsync();
            if (attempt == 3)
            {
                Assert.Fail($"haproxy did not start on 127.0.0.1:{port}:{Environment.NewLine}{output}");
            }
        }
    }

    /// <summary>One public connection through the balancer: true when <paramref name="size"/> random bytes came back intact.</summary>
    private static async Task<bool> EchoesAsync(int port, int size)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), deadline.Token);
            var payload = RandomNumberGenerator.GetBytes(size);
            var sending = Task.Run(async () =>
            {
                await socket.SendAllAsync(payload);
                socket.Shutdown(SocketShutdown.Send);
            });
            var (hash, length) = await socket.HashToEndAsync().WaitAsync(deadline.Token);
            await sending.WaitAsync(deadline.Token);
            return length == size && hash.AsSpan().SequenceEqual(SHA256.HashData(payload));
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or TimeoutException)
        {
            return false;
        }
    }

    [Test]
    public async Task TwoReplicasBehindHaproxy_EitherReachesTheAgent_KillOne_ClientsGetThroughTheOther()
    {
        // Started one after the other: the first writes the development certificate, the second loads it (one pin).
        var first = await StartReplicaAsync("replica-a");
        await using var replicaA = first.Process;
        var second = await StartReplicaAsync("replica-b");
        await using var replicaB = second.Process;
        Assert.That(second.Pin, Is.EqualTo(first.Pin), "replicas share the certificate");

        await using var upstream = TestUpstream.Echo();
        var options = new TunnelSessionOptions
        {
            AuthToken = Token,
            PinnedCertificateSha256 = first.Pin,
            HeartbeatInterval = TimeSpan.FromMilliseconds(300),
            HeartbeatTolerance = TimeSpan.FromMilliseconds(450),
        };
        options.RelayUrls.Add(first.AgentUrl);
        options.RelayUrls.Add(second.AgentUrl);
        options.Endpoints.Add(new ForwardEndpointOptions { Name = "echo", Upstream = upstream.Uri.ToString() });
        await using var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        await Eventually.WaitUntilAsync(() => session.Relays.All(r => r.State == TunnelSessionState.Connected), "connected to both replicas");
        var (balancer, port) = await StartBalancerAsync(first, second);
        await using var haproxy = balancer;

        // Each replica on its own, then through the balancer (round robin: both take turns).
        Assert.That(await EchoesAsync(first.PublicPort, 256 * 1024), Is.True, "straight to replica A");
        Assert.That(await EchoesAsync(second.PublicPort, 256 * 1024), Is.True, "straight to replica B");
        for (var i = 0; i < 20; i++)
        {
            Assert.That(await EchoesAsync(port, 256 * 1024), Is.True, $"connection {i + 1} through haproxy");
        }

        // Load through the balancer while replica A is killed (SIGKILL: no drain, no goodbye).
        var results = new System.Collections.Concurrent.ConcurrentQueue<(TimeSpan At, bool Ok)>();
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var ok = await EchoesAsync(port, 16 * 1024);
                // Counted when it ended: a connection in flight through replica A when it died belongs to the kill.
                results.Enqueue((clock.Elapsed, ok));
            }
        })).ToArray();
        await Task.Delay(TimeSpan.FromSeconds(1));
        var killedAt = clock.Elapsed;
        await replicaA.DisposeAsync();
        await Task.Delay(TimeSpan.FromSeconds(3));
        await stop.CancelAsync();
        await Task.WhenAll(load).WaitAsync(TimeSpan.FromSeconds(30));

        var after = results.Where(r => r.At >= killedAt).ToArray();
        var failed = after.Where(r => !r.Ok).ToArray();
        var recovery = failed.Length == 0 ? TimeSpan.Zero : failed.Max(r => r.At) - killedAt;
        TestContext.Out.WriteLine($"replica drill: {results.Count(r => r.At < killedAt)} connections before the kill ({results.Count(r => r.At < killedAt && !r.Ok)} failed); " +
            $"{after.Length} after, {failed.Length} failed; last failure {recovery.TotalMilliseconds:0} ms after the kill");
        Assert.Multiple(() =>
        {
            Assert.That(results.Where(r => r.At < killedAt).All(r => r.Ok), Is.True, "before the kill, every connection");
            Assert.That(after.Length, Is.GreaterThan(20), "connections went on after the kill");
            Assert.That(recovery, Is.LessThan(TimeSpan.FromSeconds(2)), "failures stop once haproxy's check marks the replica down");
            var settled = after.Where(r => r.At > killedAt + TimeSpan.FromSeconds(2)).ToArray();
            Assert.That(settled, Has.Length.GreaterThan(20), "connections in the last second of the load");
            Assert.That(settled.Count(r => !r.Ok), Is.Zero, "from 2 s after the kill on, every connection through haproxy");
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected), "the agent stays connected through replica B");
        });
        await Eventually.WaitUntilAsync(() => session.Relays[0].State == TunnelSessionState.Reconnecting, "the agent noticed replica A is gone");
        for (var i = 0; i < 10; i++)
        {
            Assert.That(await EchoesAsync(port, 256 * 1024), Is.True, $"after the kill, connection {i + 1} through haproxy");
        }
    }
}
