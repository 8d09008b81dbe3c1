using SiteLink.FunctionalTests.Infrastructure;

namespace SiteLink.FunctionalTests;

/// <summary>
/// The agent behind a corporate HTTP proxy: a real tinyproxy on loopback, CONNECT to the relay, TLS to the relay still
/// verified end to end inside the tunnel, Basic credentials good and bad, the proxy going away and coming back, and the
/// environment's HTTPS_PROXY / NO_PROXY (through the standalone agent, whose environment a test can own).
/// </summary>
[TestFixture]
[Category("Proxy")]
public sealed class CorporateProxyTests
{
    [Test]
    public async Task ThroughTheProxy_64MiBEachWay_ArriveIntact_AndTheProxySawOnlyATunnelToTheRelay()
    {
        await using var proxy = await TinyproxyServer.StartAsync();
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(configure: o => o.Proxy.Address = proxy.Address);
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        const int size = 64 * 1024 * 1024;
        using var client = await relay.ConnectClientAsync("echo");
        var (sent, received, length) = await client.EchoRandomAsync(size).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(length, Is.EqualTo(size));
            Assert.That(received, Is.EqualTo(sent), "the SHA-256 of the bytes that came back differs from that of the bytes sent");
            // One tunnel, to the relay's agent port, carried the session and its data streams.
            Assert.That(proxy.ConnectRequests, Is.EqualTo(new[] { $"CONNECT 127.0.0.1:{relay.Server.AgentUrl.Port} HTTP/1.1" }), proxy.Log);
        });
    }

    [Test]
    public async Task ThroughTheProxy_TheRelaysCertificateIsStillVerified_AWrongPinIsRefused()
    {
        // The proxy only relays bytes: TLS is between the agent and the relay, so the pin is checked as without it.
        await using var proxy = await TinyproxyServer.StartAsync();
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.Proxy.Address = proxy.Address;
        options.PinnedCertificateSha256 = new string('a', 64);

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.CertificateRejected));
            Assert.That(ex.Message, Does.Contain("does not match PinnedCertificateSha256"));
            Assert.That(proxy.ConnectRequests, Has.Count.EqualTo(1), "the attempt went through the proxy");
        });
    }

    [Test]
    public async Task ProxyWithBasicAuth_GoodCredentials_CarryVerifiedBytes()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", "correct-horse");
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            o.Proxy.Address = proxy.Address;
            o.Proxy.UserName = "alice";
            o.Proxy.Password = "correct-horse";
        });
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();

        using var client = await relay.ConnectClientAsync("echo");
        var (sent, received, length) = await client.EchoRandomAsync(4 * 1024 * 1024).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(length, Is.EqualTo(4 * 1024 * 1024));
            Assert.That(received, Is.EqualTo(sent));
        });
    }

    [Test]
    public async Task ProxyWithBasicAuth_CredentialsInTheAddress_AreUsed()
    {
        await using var proxy = await TinyproxyServer.StartAsync("bob", "pa.ss-word_1");
        await using var relay = await TestRelay.StartAsync([]);
        var address = new UriBuilder(proxy.Address) { UserName = "bob", Password = "pa.ss-word_1" }.Uri;

        var session = await relay.ConnectAgentAsync(configure: o => o.Proxy.Address = address);

        Assert.That(session.State, Is.EqualTo(TunnelSessionState.Connected));
    }

    [Test]
    public async Task ProxyWithBasicAuth_WrongPassword_IsATypedPermanentError_ThatNamesTheUserButNotThePassword()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", "correct-horse");
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.Proxy.Address = proxy.Address;
        options.Proxy.UserName = "alice";
        options.Proxy.Password = "battery-staple";

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.ProxyAuthenticationFailed));
            Assert.That(ex.IsTransient, Is.False, "wrong credentials do not fix themselves: no retry loop against the proxy");
            Assert.That(ex.Message, Does.Contain("rejected the credentials of user 'alice'").And.Contain(proxy.Address.ToString()));
            Assert.That(ex.ToString(), Does.Not.Contain("battery-staple"));
        });
    }

    [Test]
    public async Task ProxyWithBasicAuth_NoCredentials_SaysWhatToSet()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", "correct-horse");
        await using var relay = await TestRelay.StartAsync([]);
        var options = relay.AgentOptions();
        options.Proxy.Address = proxy.Address;

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.ProxyAuthenticationFailed));
            Assert.That(ex.Message, Does.Contain("requires authentication").And.Contain("Proxy.UserName"));
        });
    }

    [Test]
    public async Task ProxyDown_IsTransient_AndTheSessionConnectsOnItsOwnWhenTheProxyComesBack()
    {
        await using var proxy = await TinyproxyServer.StartAsync();
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        await proxy.StopAsync();
        var options = relay.AgentOptions();
        options.Proxy.Address = proxy.Address;

        // Connecting while the proxy is down: a transient, typed error naming the proxy.
        var first = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());
        Assert.Multiple(() =>
        {
            Assert.That(first!.TunnelError, Is.EqualTo(TunnelError.ProxyFailed));
            Assert.That(first.IsTransient, Is.True);
            Assert.That(first.Message, Does.Contain("Could not reach the proxy at " + proxy.Address).And.Contain("refused"));
        });

        // A session that was connected through the proxy loses it, retries while it is down, and comes back with it.
        await proxy.RestartAsync();
        var session = await relay.ConnectAgentAsync(configure: o =>
        {
            o.Proxy.Address = proxy.Address;
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(300);
            o.HeartbeatTolerance = TimeSpan.FromSeconds(1);
            o.Reconnect.InitialDelay = TimeSpan.FromMilliseconds(100);
            o.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(300);
        });
        await session.ForwardAsync("echo", upstream.Uri).DefaultTimeout();
        var failures = new List<Exception?>();
        session.ReconnectAttemptFailed += (_, e) =>
        {
            lock (failures)
            {
                failures.Add(e.Exception);
            }
        };

        await proxy.StopAsync();
        await Eventually.WaitUntilAsync(() => { lock (failures) { return failures.Count >= 2; } }, "two failed attempts while the proxy is down");
        await proxy.RestartAsync();
        await Eventually.WaitUntilAsync(() => session.State == TunnelSessionState.Connected && session.Endpoints.Any(e => e.Name == "echo"), "reconnected and rebound");

        using var client = await relay.ConnectClientAsync("echo");
        var (sent, received, _) = await client.EchoRandomAsync(1024 * 1024).DefaultTimeout();
        Exception?[] seen;
        lock (failures)
        {
            seen = [.. failures];
        }

        Assert.Multiple(() =>
        {
            Assert.That(received, Is.EqualTo(sent));
            Assert.That(seen.OfType<TunnelConnectionException>().Any(e => e.TunnelError == TunnelError.ProxyFailed && e.IsTransient), Is.True,
                "the attempts while the proxy was down failed as ProxyFailed: " + string.Join(" | ", seen.Select(e => e?.Message)));
            Assert.That(session.Fault, Is.Null);
        });
    }

    [Test]
    public async Task ProxyThatCannotReachTheRelay_IsTransient_WithTheProxysAnswer()
    {
        await using var proxy = await TinyproxyServer.StartAsync();
        var options = new TunnelSessionOptions
        {
            RelayUrl = new Uri($"https://127.0.0.1:{RealServers.FreePort()}"),
            AuthToken = TestRelay.AcmeToken,
        };
        options.Proxy.Address = proxy.Address;

        var ex = Assert.ThrowsAsync<TunnelConnectionException>(() => TunnelSession.ConnectAsync(options).DefaultTimeout());

        Assert.Multiple(() =>
        {
            Assert.That(ex!.TunnelError, Is.EqualTo(TunnelError.ProxyFailed));
            Assert.That(ex.IsTransient, Is.True);
            Assert.That(ex.Message, Does.Contain("could not open a tunnel to 127.0.0.1:").And.Contain("500"));
        });
    }

    [Test]
    public async Task StandaloneAgent_HonoursHttpsProxyFromTheEnvironment_AndNoProxyAndTheOptOut()
    {
        await using var proxy = await TinyproxyServer.StartAsync();
        await using var relay = await TestRelay.StartAsync(["echo"]);
        await using var upstream = TestUpstream.Echo();
        string[] args =
        [
            "--relay", relay.Server.AgentUrl.ToString(),
            "--pin", relay.Server.CertificateSha256!,
            "--endpoint", $"echo=127.0.0.1:{upstream.Port}",
        ];
        var environment = new Dictionary<string, string> { ["SITELINK_AUTHTOKEN"] = TestRelay.AcmeToken, ["HTTPS_PROXY"] = proxy.Address.ToString(), ["NO_PROXY"] = "", ["no_proxy"] = "" };

        // 1. HTTPS_PROXY alone: the agent goes through the proxy.
        await using (var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll, args, null, environment))
        {
            await agent.WaitForLineAsync("Endpoint 'echo' bound", TimeSpan.FromSeconds(30));
            using var client = await relay.ConnectClientAsync("echo");
            var (sent, received, _) = await client.EchoRandomAsync(1024 * 1024).DefaultTimeout();
            Assert.That(received, Is.EqualTo(sent));
            Assert.That(proxy.ConnectRequests, Has.Count.EqualTo(1), proxy.Log + agent.AllOutput);
        }

        await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the agent's session ended");

        // 2. NO_PROXY naming the relay's address (CIDR): direct. 3. --no-proxy: direct whatever the environment says.
        foreach (var (extraArgs, noProxy) in new[] { (Array.Empty<string>(), "localhost,127.0.0.0/8"), (new[] { "--no-proxy" }, "") })
        {
            environment["NO_PROXY"] = environment["no_proxy"] = noProxy;
            await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll, [.. args, .. extraArgs], null, environment);
            await agent.WaitForLineAsync("Endpoint 'echo' bound", TimeSpan.FromSeconds(30));
            using var client = await relay.ConnectClientAsync("echo");
            var (sent, received, _) = await client.EchoRandomAsync(64 * 1024).DefaultTimeout();
            Assert.That(received, Is.EqualTo(sent));
            Assert.That(proxy.ConnectRequests, Has.Count.EqualTo(1), $"NO_PROXY='{noProxy}' {string.Join(' ', extraArgs)}: no new CONNECT");
            await agent.DisposeAsync();
            await Eventually.WaitUntilAsync(() => relay.Server.SessionCount == 0, "the agent's session ended");
        }
    }

    [Test]
    public async Task StandaloneAgent_ProxyRejectingItsCredentials_ExitsWithCode7_SayingWhatToSet()
    {
        await using var proxy = await TinyproxyServer.StartAsync("alice", "correct-horse");
        await using var relay = await TestRelay.StartAsync([]);
        var environment = new Dictionary<string, string>
        {
            ["SITELINK_AUTHTOKEN"] = TestRelay.AcmeToken,
            ["SiteLink__Proxy__UserName"] = "alice",
            ["SiteLink__Proxy__Password"] = "battery-staple",
        };

        await using var agent = ProcessRunner.Dotnet(ProcessRunner.AgentDll,
            ["--relay", relay.Server.AgentUrl.ToString(), "--pin", relay.Server.CertificateSha256!, "--proxy", proxy.Address.ToString()], null, environment);
        var exit = await agent.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Multiple(() =>
        {
            Assert.That(exit, Is.EqualTo(7), agent.AllOutput);
            Assert.That(agent.AllOutput, Does.Contain("rejected the credentials of user 'alice'").And.Contain("SiteLink__Proxy__UserName"));
            Assert.That(agent.AllOutput, Does.Not.Contain("battery-staple"));
        });
    }
}
