using System.Net;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Tests;

/// <summary>What one agent session may make the relay hold: its control queue, parked streams, handshakes.</summary>
[TestFixture]
[Category("Hostile")]
public sealed class AgentSessionLimitsTests
{
    private static readonly TokenIdentity Token = new("acme", "acme", new EndpointAcl(["*"]));

    [Test]
    public void ControlQueue_FullInMessages_EndsTheSession_WithAReason_AndCountsIt()
    {
        var counters = new RelayCounters();
        var session = new AgentSession("s1", Token, "c", "p", "1", maxQueueMessages: 100, counters: counters);

        var accepted = Enumerable.Range(0, 150).Count(i => session.Send(new RelayMessage { HeartbeatAck = new HeartbeatAck { Sequence = (ulong)i } }));

        Assert.Multiple(() =>
        {
            Assert.That(accepted, Is.EqualTo(100));
            Assert.That(session.Lifetime.IsCancellationRequested, Is.True, "a session whose agent does not read is ended");
            Assert.That(session.Ending!.Kind, Is.EqualTo("queue_full"));
            Assert.That(session.Ending.Reason, Does.Contain("does not read its control stream"));
            Assert.That(counters.SessionsEnded("queue_full"), Is.EqualTo(1));
        });
    }

    [Test]
    public void ControlQueue_FullInBytes_EndsTheSession_BeforeMoreThanTheLimitIsHeld()
    {
        var counters = new RelayCounters();
        var session = new AgentSession("s1", Token, "c", "p", "1", maxQueueMessages: 10_000, maxQueueBytes: 64 * 1024, counters: counters);
        var big = new RelayMessage { BindResult = new BindResult { BindId = "b", Message = new string('m', 4000) } };

        var accepted = 0;
        while (session.Send(big))
        {
            accepted++;
        }

        Assert.Multiple(() =>
        {
            Assert.That(accepted, Is.EqualTo(64 * 1024 / big.CalculateSize()));
            Assert.That(session.QueuedBytes, Is.LessThanOrEqualTo(64 * 1024));
            Assert.That(counters.ControlQueuePeakBytes, Is.LessThanOrEqualTo(64 * 1024));
            Assert.That(session.Ending!.Kind, Is.EqualTo("queue_full"));
        });
    }

    [Test]
    public void ControlQueue_MessagesTakenByTheWriter_FreeTheirBytes()
    {
        var session = new AgentSession("s1", Token, "c", "p", "1", maxQueueMessages: 4);
        var message = new RelayMessage { HeartbeatAck = new HeartbeatAck { Sequence = 1 } };

        for (var i = 0; i < 1000; i++)
        {
            Assert.That(session.Send(message), Is.True);
            Assert.That(session.Outgoing.TryRead(out var taken), Is.True);
            session.OnSent(taken!);
        }

        Assert.Multiple(() =>
        {
            Assert.That(session.QueuedBytes, Is.Zero);
            Assert.That(session.Lifetime.IsCancellationRequested, Is.False);
        });
    }

    [Test]
    public async Task Ending_WhileMessagesAreSent_IsNeverBlamedOnAFullQueue()
    {
        for (var run = 0; run < 200; run++)
        {
            var counters = new RelayCounters();
            var session = new AgentSession("s1", Token, "c", "p", "1", counters: counters);
            for (var i = 0; i < 32; i++)
            {
                session.TryPark(32);
            }

            using var go = new ManualResetEventSlim();
            var sending = Task.Run(() =>
            {
                go.Wait();
                while (!session.Lifetime.IsCancellationRequested)
                {
                    session.Send(new RelayMessage { HeartbeatAck = new HeartbeatAck { Sequence = 1 } });
                }
            });
            go.Set();
            session.End();
            await sending.WaitAsync(TimeSpan.FromSeconds(10));

            Assert.That(session.Ending, Is.Null, $"run {run}: an ordinary end is not a full queue");
            Assert.That(counters.SessionsEnded("queue_full"), Is.Zero);
        }
    }

    [Test]
    public void ParkedStreams_ResetWhileWaiting_NoLongerCount_SoNewOnesCanPark()
    {
        var session = new AgentSession("s1", Token, "c", "p", "1");
        var first = Enumerable.Range(0, 32).Select(_ => session.TryPark(32)).ToArray();

        // The agent resets every one of them (its calls end while they wait).
        var unparked = first.Count(p => session.TryUnpark(p!));
        var second = Enumerable.Range(0, 32).Select(_ => session.TryPark(32)).ToArray();

        Assert.Multiple(() =>
        {
            Assert.That(first, Has.All.Not.Null);
            Assert.That(unparked, Is.EqualTo(32));
            Assert.That(second, Has.All.Not.Null, "the ended ones must not hold the limit");
            Assert.That(session.ParkedCount, Is.EqualTo(32));
            Assert.That(session.TryPark(32), Is.Null, "the limit still holds");
        });
    }

    [Test]
    public void Handshakes_AreCappedPerToken_AndPerAddress_AndFreedWhenTheyEnd()
    {
        var options = new RelayOptions();
        options.Limits.MaxSessionsPerToken = 3;
        options.Limits.MaxPendingHellosPerIp = 5;
        var registry = new SessionRegistry(options);
        var one = IPAddress.Parse("192.0.2.1");
        var two = IPAddress.Parse("192.0.2.2");

        var acmeOnOne = Enumerable.Range(0, 4).Select(_ => registry.TryBeginHandshake("acme", one)).ToArray();
        var globexOnOne = Enumerable.Range(0, 3).Select(_ => registry.TryBeginHandshake("globex", one)).ToArray();
        var globexOnTwo = registry.TryBeginHandshake("globex", two);
        registry.EndHandshake("acme", one);
        var acmeAfterOneEnded = registry.TryBeginHandshake("acme", two);

        Assert.Multiple(() =>
        {
            Assert.That(acmeOnOne.Take(3), Has.All.Null);
            Assert.That(acmeOnOne[3], Does.Contain("MaxSessionsPerToken"));
            Assert.That(globexOnOne.Take(2), Has.All.Null);
            Assert.That(globexOnOne[2], Does.Contain("MaxPendingHellosPerIp"));
            Assert.That(globexOnTwo, Is.Null, "another address has its own allowance");
            Assert.That(acmeAfterOneEnded, Is.Null);
            Assert.That(registry.PendingHandshakes, Is.EqualTo(3 + 2 + 1 - 1 + 1));
        });
    }

    [Test]
    public void Bind_WithAnOversizedBindId_IsRefused_WithoutEchoingIt()
    {
        var registry = new SessionRegistry(new RelayOptions());
        var session = new AgentSession("s1", Token, "c", "p", "1");
        registry.TryAdd(session);

        var result = registry.Bind(session, new Bind { BindId = new string('x', 60_000), Name = "db", Kind = EndpointKind.Tcp });

        Assert.Multiple(() =>
        {
            Assert.That(result.Status, Is.EqualTo(BindStatus.Invalid));
            Assert.That(result.BindId, Is.Empty);
            Assert.That(result.CalculateSize(), Is.LessThan(200));
        });
    }
}
