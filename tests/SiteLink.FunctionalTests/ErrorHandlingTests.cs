using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Protocol.V1;
using SiteLink.Relay.Diagnostics;

namespace SiteLink.FunctionalTests;

[TestFixture]
public sealed class ErrorHandlingTests
{
    /// <summary>Proves a session still carries verified bytes end to end.</summary>
    private static async Task AssertEchoesAsync(TestRelay relay, string cloudEndpoint)
    {
        var payload = SocketTestExtensions.RandomBytes(256 * 1024);
        using var client = await relay.ConnectClientAsync(cloudEndpoint);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        Assert.That(await receiving.DefaultTimeout(), Is.EqualTo(payload), $"'{cloudEndpoint}' no longer echoes");
    }

    [Test]
    public async Task BadToken_ConnectAsync_ThrowsAuthenticationExceptionAtOnce_OtherSessionsKeepServing()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var good = await relay.ConnectAgentAsync();
        await good.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        var options = relay.AgentOptions("not-a-valid-token-at-all");
        var watch = Stopwatch.StartNew();

        var ex = Assert.ThrowsAsync<TunnelAuthenticationException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.Message, Does.Contain("not valid"));
            Assert.That(ex.Message, Does.Not.Contain("not-a-valid-token-at-all"), "a secret must never be echoed");
            Assert.That(ex.IsTransient, Is.False);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "a bad token fails fast, it is not retried");
            Assert.That(relay.Logs.Entries.Any(e => e.Message.Contains("not-a-valid-token-at-all", StringComparison.Ordinal)), Is.False, "a secret must never be logged");
        });
        await AssertEchoesAsync(relay, "echo");
    }

    [Test]
    public async Task BindOutsideAcl_ThrowsDenied_SessionStillBindsAllowedNames()
    {
        await using var relay = await TestRelay.StartAsync(["db-main"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(TestRelay.AcmeRestrictedToken);

        var ex = Assert.ThrowsAsync<TunnelBindException>(() => session.ForwardAsync("billing-api", upstream.Uri).DefaultTimeout());
        await session.ForwardAsync("db-main", upstream.Uri).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(ex!.Code, Is.EqualTo(BindErrorCode.Denied));
            Assert.That(ex.EndpointName, Is.EqualTo("billing-api"));
            Assert.That(ex.Message, Does.Contain("db-*"), "the refusal says what the token may bind");
            Assert.That(session.Endpoints.Select(e => e.Name), Is.EquivalentTo(new[] { "db-main" }));
        });
        await AssertEchoesAsync(relay, "db-main");
    }

    [Test]
    public async Task BindNameHeldByAnotherSession_ThrowsNameTaken_FirstSessionKeepsServing()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var first = await relay.ConnectAgentAsync();
        var second = await relay.ConnectAgentAsync();
        await first.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        var ex = Assert.ThrowsAsync<TunnelBindException>(() => second.ForwardAsync("echo", upstream.Uri).DefaultTimeout());

        Assert.That(ex!.Code, Is.EqualTo(BindErrorCode.NameTaken));
        await AssertEchoesAsync(relay, "echo");
    }

    [Test]
    public async Task SameNameInAnotherTenant_IsIndependent_EachCloudEndpointReachesItsOwnTenant()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], options =>
            options.CloudEndpoints.Add(new() { Name = "globex-echo", Listen = "127.0.0.1:0", Tenant = "globex", Endpoint = "echo" }));
        var acme = await relay.ConnectAgentAsync();
        var globex = await relay.ConnectAgentAsync(TestRelay.GlobexToken);
        await acme.BindHandlerAsync("echo", (c, ct) => c.Stream.WriteAsync("acme"u8.ToArray(), ct).AsTask()).DefaultTimeout();
        await globex.BindHandlerAsync("echo", (c, ct) => c.Stream.WriteAsync("globex"u8.ToArray(), ct).AsTask()).DefaultTimeout();

        using var toAcme = await relay.ConnectClientAsync("echo");
        using var toGlobex = await relay.ConnectClientAsync("globex-echo");

        Assert.Multiple(async () =>
        {
            Assert.That(await toAcme.ReadToEndAsync().DefaultTimeout(), Is.EqualTo("acme"u8.ToArray()));
            Assert.That(await toGlobex.ReadToEndAsync().DefaultTimeout(), Is.EqualTo("globex"u8.ToArray()));
        });
    }

    [Test]
    public async Task CloudEndpointWithNoAgent_ClientIsClosedAtOnce_AndCounted()
    {
        await using var relay = await TestRelay.StartAsync(["nobody"]);
        var watch = Stopwatch.StartNew();

        var closed = await relay.ConnectAndWaitForCloseAsync("nobody");

        Assert.Multiple(() =>
        {
            Assert.That(closed, Is.True);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)), "never held open");
            Assert.That(relay.Server.Counters.Refused(RefusalReason.NoAgent), Is.EqualTo(1));
            Assert.That(relay.Logs.Entries.Any(e => e.Level == LogLevel.Warning && e.Message.Contains("no agent serves 'nobody'", StringComparison.Ordinal)), Is.True);
        });
    }

    [Test]
    public async Task UpstreamRefusesConnections_ClientIsClosedPromptly_FailureLogged_SessionServesOthers()
    {
        await using var relay = await TestRelay.StartAsync(["dead", "echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("dead", Loopback.Tcp(ClosedPort())).DefaultTimeout();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        var watch = Stopwatch.StartNew();

        var closed = await relay.ConnectAndWaitForCloseAsync("dead");

        Assert.Multiple(() =>
        {
            Assert.That(closed, Is.True);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(3)), "closed promptly, not at the pairing timeout");
            Assert.That(relay.Server.Counters.Refused(RefusalReason.AgentRefused), Is.EqualTo(1));
            Assert.That(relay.Logs.Contains("SiteLink.TunnelSession", new EventId(23)), Is.True, "the agent logs the upstream failure");
            Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
        });
        await AssertEchoesAsync(relay, "echo");
    }

    [Test]
    public async Task ForgedOrForeignStreamId_RelayAnswersNotFound_SessionKeepsServing()
    {
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        using var raw = new RawAgent(relay);
        using var rawGlobex = new RawAgent(relay, TestRelay.GlobexToken);

        using var forged = raw.OpenStream(session.SessionId, "forged-stream-id");
        var forgedError = Assert.ThrowsAsync<RpcException>(() => forged.ResponseStream.MoveNext().DefaultTimeout());
        using var foreign = rawGlobex.OpenStream(session.SessionId, "forged-stream-id");
        var foreignError = Assert.ThrowsAsync<RpcException>(() => foreign.ResponseStream.MoveNext().DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(forgedError!.StatusCode, Is.EqualTo(StatusCode.NotFound));
            Assert.That(foreignError!.StatusCode, Is.EqualTo(StatusCode.NotFound), "another tenant's token cannot reach this session");
            Assert.That(relay.Server.Counters.UnknownStreamRequests, Is.EqualTo(2));
        });
        await AssertEchoesAsync(relay, "echo");
    }

    [Test]
    public async Task StreamIdIsSingleUse_SecondClaimIsRefused()
    {
        await using var relay = await TestRelay.StartAsync(["raw"]);
        using var raw = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        using (control)
        {
            Assert.That((await RawAgent.BindAsync(control, "raw")).Status, Is.EqualTo(BindStatus.Ok));
            using var client = await relay.ConnectClientAsync("raw");
            var offer = (await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.OpenStream)).OpenStream;

            using var first = raw.OpenStream(welcome.SessionId, offer.StreamId);
            await first.RequestStream.WriteAsync(new StreamFrame { Data = Google.Protobuf.ByteString.CopyFromUtf8("hi") }).DefaultTimeout();
            var buffer = new byte[2];
            await client.ReceiveAsync(buffer).DefaultTimeout();
            using var second = raw.OpenStream(welcome.SessionId, offer.StreamId);
            var error = Assert.ThrowsAsync<RpcException>(() => second.ResponseStream.MoveNext().DefaultTimeout());

            Assert.Multiple(() =>
            {
                Assert.That(buffer, Is.EqualTo("hi"u8.ToArray()));
                Assert.That(error!.StatusCode, Is.EqualTo(StatusCode.NotFound));
            });
        }
    }

    [Test]
    public async Task AgentNeverOpensOfferedStream_ClientIsClosedAtPairingTimeout()
    {
        await using var relay = await TestRelay.StartAsync(["raw"], o => o.Limits.PendingStreamTimeout = TimeSpan.FromMilliseconds(300));
        using var raw = new RawAgent(relay);
        var (control, _) = await raw.HandshakeAsync();
        using (control)
        {
            await RawAgent.BindAsync(control, "raw");
            using var client = await relay.ConnectClientAsync("raw");
            await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.OpenStream);

            Assert.Multiple(async () =>
            {
                Assert.That(await client.WaitForCloseAsync().DefaultTimeout(), Is.True);
                Assert.That(relay.Server.Counters.Refused(RefusalReason.PairingTimeout), Is.EqualTo(1));
            });
        }
    }

    [Test]
    public async Task OversizedFrame_FailsOnlyThatConnection()
    {
        await using var relay = await TestRelay.StartAsync(["raw", "echo"], o => o.Limits.MaxFrameSize = 16 * 1024);

        var status = await MisbehaveOnDataStreamAsync(relay, (raw, sessionId, streamId) =>
        {
            var stream = raw.OpenStream(sessionId, streamId);
            return (stream, stream.RequestStream.WriteAsync(new StreamFrame { Data = Google.Protobuf.ByteString.CopyFrom(new byte[64 * 1024]) }), stream.ResponseStream);
        });

        Assert.That(status, Is.EqualTo(StatusCode.ResourceExhausted));
    }

    [TestCase(new byte[] { 0x0A, 0x05, 1, 2 }, TestName = "MalformedDataFrame_LengthPastEnd_FailsOnlyThatConnection")]
    [TestCase(new byte[] { 0x0B, 0x0C }, TestName = "MalformedDataFrame_GroupWireType_FailsOnlyThatConnection")]
    public async Task MalformedDataFrame_FailsOnlyThatConnection(byte[] frame)
    {
        await using var relay = await TestRelay.StartAsync(["raw", "echo"]);

        var status = await MisbehaveOnDataStreamAsync(relay, (raw, sessionId, streamId) =>
        {
            var stream = raw.OpenRawStream(sessionId, streamId);
            return (stream, stream.RequestStream.WriteAsync(frame), stream.ResponseStream);
        });

        Assert.That(status, Is.Not.EqualTo(StatusCode.OK));
    }

    /// <summary>
    /// A raw agent takes a public connection and breaks the data protocol on its stream; the relay must fail that call
    /// (its status is returned), close the public client, end the bridge, and go on serving a well-behaved agent.
    /// </summary>
    private static async Task<StatusCode> MisbehaveOnDataStreamAsync<T>(
        TestRelay relay, Func<RawAgent, string, string, (IDisposable Call, Task Write, IAsyncStreamReader<T> Responses)> misbehave)
    {
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync();
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        using var raw = new RawAgent(relay);
        var (control, welcome) = await raw.HandshakeAsync();
        StatusCode status;
        using (control)
        {
            await RawAgent.BindAsync(control, "raw");
            using var client = await relay.ConnectClientAsync("raw");
            var offer = (await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.OpenStream)).OpenStream;
            var (call, write, responses) = misbehave(raw, welcome.SessionId, offer.StreamId);
            using (call)
            {
                try
                {
                    await write.DefaultTimeout();
                }
                catch (RpcException)
                {
                    // The relay may end the call before the write completes; its status is checked below.
                }

                var error = Assert.ThrowsAsync<RpcException>(() => responses.MoveNext(CancellationToken.None).DefaultTimeout());
                status = error!.StatusCode;
                Assert.Multiple(async () =>
                {
                    Assert.That(await client.WaitForCloseAsync().DefaultTimeout(), Is.True, "the public client is not left hanging");
                    Assert.That(() => relay.Server.Counters.ActiveConnections, Is.Zero.After(5000, 20), "the bridge ended");
                });
            }
        }

        // The SDK chunks its writes to the limit the relay announced, so its large transfers still work.
        await AssertEchoesAsync(relay, "echo");
        return status;
    }

    [Test]
    public async Task MalformedControlMessages_AreRefusedWithTypedErrors()
    {
        await using var relay = await TestRelay.StartAsync([]);
        using var raw = new RawAgent(relay);

        using var noHello = raw.OpenControl();
        await noHello.RequestStream.WriteAsync(new AgentMessage { Heartbeat = new Heartbeat { Sequence = 1 } }).DefaultTimeout();
        var noHelloError = Assert.ThrowsAsync<RpcException>(() => noHello.ResponseStream.MoveNext().DefaultTimeout());

        using var oldVersion = raw.OpenControl();
        await oldVersion.RequestStream.WriteAsync(new AgentMessage { Hello = new Hello { ProtocolVersion = 99 } }).DefaultTimeout();
        var versionError = Assert.ThrowsAsync<RpcException>(() => oldVersion.ResponseStream.MoveNext().DefaultTimeout());

        var (control, _) = await raw.HandshakeAsync();
        using (control)
        {
            await control.RequestStream.WriteAsync(new AgentMessage()).DefaultTimeout();
            var error = (await RawAgent.NextAsync(control, RelayMessage.KindOneofCase.Error)).Error;
            var invalid = await RawAgent.BindAsync(control, "not a valid name!");

            Assert.Multiple(() =>
            {
                Assert.That(noHelloError!.StatusCode, Is.EqualTo(StatusCode.InvalidArgument));
                Assert.That(versionError!.StatusCode, Is.EqualTo(StatusCode.FailedPrecondition));
                Assert.That(versionError.Status.Detail, Does.Contain("versions 1 to 2"));
                Assert.That(error.Code, Is.EqualTo(ErrorCode.Protocol));
                Assert.That(invalid.Status, Is.EqualTo(BindStatus.Invalid), "the session survives a bad message and answers the next one");
            });
        }
    }

    [Test]
    public async Task SessionLimitPerToken_SecondSessionIsRefusedWithPermissionError()
    {
        await using var relay = await TestRelay.StartAsync([], o => o.Limits.MaxSessionsPerToken = 1);
        await relay.ConnectAgentAsync();

        var ex = Assert.ThrowsAsync<TunnelPermissionException>(() => relay.ConnectAgentAsync());

        Assert.That(ex!.Message, Does.Contain("MaxSessionsPerToken"));
    }

    [Test]
    public async Task BindLimitPerSession_ExtraBindIsRefusedWithLimitExceeded()
    {
        await using var relay = await TestRelay.StartAsync([], o => o.Limits.MaxBindsPerSession = 2);
        var session = await relay.ConnectAgentAsync();
        await session.ListenAsync("one").DefaultTimeout();
        await session.ListenAsync("two").DefaultTimeout();

        var ex = Assert.ThrowsAsync<TunnelBindException>(() => session.ListenAsync("three").DefaultTimeout());

        Assert.That(ex!.Code, Is.EqualTo(BindErrorCode.LimitExceeded));
    }

    [Test]
    public async Task PinnedCertificateMismatch_ThrowsNonTransientConnectionErrorNamingThePin()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.PinnedCertificateSha256 = new string('A', 64);

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.Message, Does.Contain("PinnedCertificateSha256"));
            Assert.That(ex.IsTransient, Is.False);
        });
    }

    [Test]
    public async Task SelfSignedRelayWithoutPin_IsNotTrusted()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.PinnedCertificateSha256 = null;

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.That(ex!.Message, Does.Contain("not trusted"));
    }

    [Test]
    public async Task InsecureRelay_RequiresExplicitOptIn_ThenCarriesTraffic()
    {
        await using var relay = await TestRelay.StartAsync(["echo"], o => o.Tls.Disabled = true);
        await using var upstream = TestUpstream.Echo();
        var options = relay.AgentOptions();
        options.PinnedCertificateSha256 = null;

        var refused = Assert.ThrowsAsync<ArgumentException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            o.PinnedCertificateSha256 = null;
            o.AllowInsecureTransport = true;
        });
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        Assert.That(refused!.Message, Does.Contain("AllowInsecureTransport"));
        await AssertEchoesAsync(relay, "echo");
    }

    [Test]
    public async Task RelayUnreachable_ThrowsTransientConnectionError()
    {
        var options = new TunnelSessionOptions
        {
            RelayUrl = new Uri($"https://127.0.0.1:{ClosedPort()}"),
            AuthToken = TestRelay.AcmeToken,
            ConnectTimeout = TimeSpan.FromSeconds(5),
        };

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.That(ex!.IsTransient, Is.True);
        await Task.CompletedTask;
    }

    [Test]
    public async Task RevokedToken_EndsItsSessionsAndRefusesNewOnes()
    {
        await using var relay = await TestRelay.StartAsync([]);
        var session = await relay.ConnectAgentAsync();

        relay.Server.RevokeToken("acme");
        var reconnect = Assert.ThrowsAsync<TunnelAuthenticationException>(() => TunnelSession.ConnectAsync(relay.AgentOptions()).DefaultTimeout());
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Faulted);

        Assert.That(reconnect!.Message, Does.Contain("revoked"));
    }

    private static int ClosedPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
