using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>C9: several agent sessions serve one endpoint name as a pool; the relay balances and routes around the dead.</summary>
[TestFixture]
[Category("Pooling")]
public sealed class PoolingTests
{
    private static readonly EndpointOptions Pooled = new() { Pooling = true };

    /// <summary>Each member's handler writes its number, then echoes what it reads until the client's FIN.</summary>
    private static TunnelConnectionHandler Member(byte number) => async (connection, ct) =>
    {
        await connection.Stream.WriteAsync(new[] { number }, ct);
        await connection.Stream.CopyToAsync(connection.Stream, ct);
    };

    private static async Task<ITunnelSession> JoinAsync(TestRelay relay, byte number, string token = TestRelay.AcmeToken, Action<TunnelSessionOptions>? configure = null)
    {
        var session = await relay.ConnectAgentAsync(token, options =>
        {
            options.ClientId = $"member-{number}";
            configure?.Invoke(options);
        });
        await session.BindHandlerAsync("pool", Member(number), Pooled).DefaultTimeout();
        return session;
    }

    /// <summary>Connects to the pool's cloud endpoint and returns the number of the member that answered.</summary>
    private static async Task<int> WhoAnswersAsync(IPEndPoint endpoint)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endpoint).DefaultTimeout();
        var one = new byte[1];
        var read = await socket.ReceiveAsync(one.AsMemory()).AsTask().DefaultTimeout();
        return read == 1 ? one[0] : -1;
    }

    [Test]
    public async Task ThreeMembers_9000Connections_EachServesAThirdWithinTenPercent_OtherTenantNone()
    {
        await using var relay = await TestRelay.StartAsync(["pool"]);
        for (byte number = 1; number <= 3; number++)
        {
            await JoinAsync(relay, number);
        }

        // Another tenant's pool of the same name is another pool: it never sees acme's connections.
        await JoinAsync(relay, 9, TestRelay.GlobexToken);
        Assert.That(relay.Server.FindEndpointMembers("acme", "pool"), Has.Count.EqualTo(3));

        var served = new int[10];
        var failed = 0;
        var next = 0;
        var endpoint = relay.CloudEndpoint("pool");
        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref next) <= 9000)
            {
                var who = await WhoAnswersAsync(endpoint);
                if (who is >= 1 and <= 9)
                {
                    Interlocked.Increment(ref served[who]);
                }
                else
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }))).WaitAsync(TimeSpan.FromSeconds(90));

        Assert.Multiple(() =>
        {
            Assert.That(failed, Is.Zero, "every connection was served");
            for (var number = 1; number <= 3; number++)
            {
                Assert.That(served[number], Is.InRange(2700, 3300), $"member {number} served {served[number]} of 9000 (a third is 3000)");
            }

            Assert.That(served[9], Is.Zero, "the other tenant's member of a pool with the same name");
        });
    }

    [Test]
    public async Task LeastActiveMemberGetsTheNextConnection()
    {
        await using var relay = await TestRelay.StartAsync(["pool"]);
        await JoinAsync(relay, 1);
        await JoinAsync(relay, 2);
        var endpoint = relay.CloudEndpoint("pool");

        // Hold five connections open; wherever each went, the next goes to whichever member holds fewer.
        var held = new List<Socket>();
        var holding = new int[3];
        try
        {
            for (var i = 0; i < 5; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                held.Add(socket);
                await socket.ConnectAsync(endpoint).DefaultTimeout();
                var one = new byte[1];
                Assert.That(await socket.ReceiveAsync(one.AsMemory()).AsTask().DefaultTimeout(), Is.EqualTo(1));
                var fewer = holding[1] < holding[2] ? 1 : holding[2] < holding[1] ? 2 : 0;
                if (fewer != 0)
                {
                    Assert.That(one[0], Is.EqualTo(fewer), $"connection {i + 1}: member {fewer} held fewer ({holding[1]} vs {holding[2]})");
                }

                holding[one[0]]++;
            }

            Assert.That(Math.Abs(holding[1] - holding[2]), Is.LessThanOrEqualTo(1), "five held connections split 3/2");
        }
        finally
        {
            foreach (var socket in held)
            {
                socket.Dispose();
            }
        }
    }

    [Test]
    public async Task BindsThatDisagreeOnPooling_AreRefusedWithPoolingMismatch()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var pooled = await relay.ConnectAgentAsync(configure: o => o.ClientId = "a");
        var single = await relay.ConnectAgentAsync(configure: o => o.ClientId = "b");
        var third = await relay.ConnectAgentAsync(configure: o => o.ClientId = "c");
        await pooled.BindHandlerAsync("pool", Member(1), Pooled).DefaultTimeout();
        await single.BindHandlerAsync("solo", Member(2)).DefaultTimeout();

        var joinWithout = Assert.ThrowsAsync<TunnelBindException>(() => third.BindHandlerAsync("pool", Member(3)).DefaultTimeout());
        var joinSolo = Assert.ThrowsAsync<TunnelBindException>(() => third.BindHandlerAsync("solo", Member(3), Pooled).DefaultTimeout());
        var taken = Assert.ThrowsAsync<TunnelBindException>(() => third.BindHandlerAsync("solo", Member(3)).DefaultTimeout());
        // The session itself refuses a name it already holds; the relay would say NameTaken (SessionRegistryTests).
        var twice = Assert.ThrowsAsync<ArgumentException>(() => pooled.BindHandlerAsync("pool", Member(1), Pooled).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(joinWithout!.Code, Is.EqualTo(BindErrorCode.PoolingMismatch));
            Assert.That(joinWithout.Message, Does.Contain("pooling on"));
            Assert.That(joinSolo!.Code, Is.EqualTo(BindErrorCode.PoolingMismatch));
            Assert.That(joinSolo.Message, Does.Contain("without pooling"));
            Assert.That(taken!.Code, Is.EqualTo(BindErrorCode.NameTaken));
            Assert.That(twice!.Message, Does.Contain("already bound"), "a session is one member of a pool, not two");
            Assert.That(relay.Server.FindEndpointMembers("acme", "pool"), Has.Count.EqualTo(1));
            Assert.That(relay.Server.FindEndpointMembers("acme", "solo"), Has.Count.EqualTo(1));
        });
    }

    [Test]
    public async Task PooledBind_StillObeysTheTokensAcl()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var restricted = await relay.ConnectAgentAsync(TestRelay.AcmeRestrictedToken);

        var denied = Assert.ThrowsAsync<TunnelBindException>(() => restricted.BindHandlerAsync("pool", Member(1), Pooled).DefaultTimeout());

        Assert.That(denied!.Code, Is.EqualTo(BindErrorCode.Denied));
    }

    public enum Death
    {
        Killed,
        BlackHoled,
        Drained,
    }

    [TestCase(Death.Killed)]
    [TestCase(Death.BlackHoled)]
    [TestCase(Death.Drained)]
    public async Task MemberDies_OnceTheRelayKnows_EveryNewConnectionGoesToTheOthers(Death death)
    {
        await using var relay = await TestRelay.StartAsync(["pool"]);
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, relay.Server.AgentUrl.Port));
        await JoinAsync(relay, 1);
        await JoinAsync(relay, 2);
        var doomed = await JoinAsync(relay, 3, configure: options =>
        {
            options.RelayUrl = new Uri($"https://127.0.0.1:{proxy.Port}");
            // The relay declares a session silent after the agent's interval + tolerance (here under a second).
            options.HeartbeatInterval = TimeSpan.FromMilliseconds(300);
            options.HeartbeatTolerance = TimeSpan.FromMilliseconds(450);
            // It must not come back through the proxy during the test: the relay's view is what is tested.
            options.Reconnect.ShouldRetry = _ => false;
        });
        Assert.That(relay.Server.FindEndpointMembers("acme", "pool"), Has.Count.EqualTo(3));
        var endpoint = relay.CloudEndpoint("pool");

        switch (death)
        {
            case Death.Killed:
                // Its connection reset and the way back closed, as when the agent's host dies.
                proxy.BlackHole();
                proxy.ResetAll();
                break;
            case Death.BlackHoled:
                proxy.BlackHole();
                break;
            case Death.Drained:
                await doomed.CloseAsync().DefaultTimeout();
                break;
        }

        await Eventually.WaitUntilAsync(() => relay.Server.FindEndpointMembers("acme", "pool").Count == 2, "the relay dropped the dead member");

        // 300 connections, each carrying 64 KiB both ways: every one served, by the two members left.
        var served = new int[4];
        var payload = RandomNumberGenerator.GetBytes(64 * 1024);
        var expected = SHA256.HashData(payload);
        await Task.WhenAll(Enumerable.Range(0, 8).Select(worker => Task.Run(async () =>
        {
            for (var i = 0; i < 300 / 8 + (worker < 300 % 8 ? 1 : 0); i++)
            {
                using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(endpoint).DefaultTimeout();
                var sending = Task.Run(async () =>
                {
                    await socket.SendAllAsync(payload);
                    socket.Shutdown(SocketShutdown.Send);
                });
                var received = await socket.ReadToEndAsync().DefaultTimeout();
                await sending.DefaultTimeout();
                Assert.That(received, Has.Length.EqualTo(payload.Length + 1), "the member's number, then the echo");
                Assert.That(SHA256.HashData(received.AsSpan(1)), Is.EqualTo(expected), "the echo's SHA-256");
                Interlocked.Increment(ref served[received[0]]);
            }
        }))).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Multiple(() =>
        {
            Assert.That(served[1] + served[2], Is.EqualTo(300));
            Assert.That(served[3], Is.Zero, "the dead member");
            Assert.That(served[1], Is.GreaterThan(75), "both members left take their share");
            Assert.That(served[2], Is.GreaterThan(75), "both members left take their share");
        });
    }
}
