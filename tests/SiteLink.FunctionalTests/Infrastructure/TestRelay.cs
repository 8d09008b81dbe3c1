using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A real relay on loopback (Kestrel on 127.0.0.1:0, TLS with a generated certificate) with three tokens: two of
/// tenant "acme" (one may bind anything, one only "db-*") and one of tenant "globex".
/// </summary>
internal sealed class TestRelay : IAsyncDisposable
{
    public const string AcmeToken = "acme-token-0123456789abcdef";
    public const string AcmeRestrictedToken = "acme-restricted-0123456789abcdef";
    public const string GlobexToken = "globex-token-0123456789abcdef";

    private readonly List<ITunnelSession> _sessions = [];

    private TestRelay(RelayServer server, TestLogSink logs)
    {
        Server = server;
        Logs = logs;
    }

    public RelayServer Server { get; }

    public TestLogSink Logs { get; }

    /// <summary>
    /// Starts a relay whose cloud endpoints each forward to the acme endpoint of the same name (globex ones start with
    /// "globex-"). <paramref name="services"/> adds to the relay's services before the relay's own (which are added only
    /// when missing, e.g. an <c>IRelayEventSink</c> to record its events).
    /// </summary>
    public static async Task<TestRelay> StartAsync(IEnumerable<string> cloudEndpoints, Action<RelayOptions>? configure = null, TimeProvider? timeProvider = null, Action<IServiceCollection>? services = null)
    {
        var options = new RelayOptions { RelayId = "test-relay", Region = "loopback", AgentListen = "127.0.0.1:0" };
        options.Tokens.Add(Token("acme", AcmeToken, "acme", "*"));
        options.Tokens.Add(Token("acme-restricted", AcmeRestrictedToken, "acme", "db-*"));
        options.Tokens.Add(Token("globex", GlobexToken, "globex", "*"));
        foreach (var name in cloudEndpoints)
        {
            var tenant = name.StartsWith("globex-", StringComparison.Ordinal) ? "globex" : "acme";
            options.CloudEndpoints.Add(new CloudEndpointOptions { Name = name, Listen = "127.0.0.1:0", Tenant = tenant, Endpoint = name });
        }

        configure?.Invoke(options);
        var logs = new TestLogSink();
        // RelayServer's logging hook runs before the relay adds its services: the one public way to add services first.
        void Configure(ILoggingBuilder logging)
        {
            logs.AddTo(logging);
            services?.Invoke(logging.Services);
        }

        var server = await RelayServer.StartAsync(options, Configure, timeProvider ?? TimeProvider.System, CancellationToken.None).DefaultTimeout();
        return new TestRelay(server, logs);
    }

    private static AuthTokenOptions Token(string name, string secret, string tenant, string allow)
    {
        var token = new AuthTokenOptions { Name = name, Token = secret, Tenant = tenant };
        token.Allow.Add(allow);
        return token;
    }

    public TunnelSessionOptions AgentOptions(string token = AcmeToken) => new()
    {
        RelayUrl = Server.AgentUrl,
        AuthToken = token,
        PinnedCertificateSha256 = Server.CertificateSha256,
        LoggerFactory = Logs.CreateFactory(),
        ClientId = "test-agent",
    };

    /// <summary>Connects an agent session; disposed with the relay.</summary>
    public async Task<ITunnelSession> ConnectAgentAsync(string token = AcmeToken, Action<TunnelSessionOptions>? configure = null)
    {
        var options = AgentOptions(token);
        configure?.Invoke(options);
        var session = await TunnelSession.ConnectAsync(options).DefaultTimeout();
        _sessions.Add(session);
        return session;
    }

    public IPEndPoint CloudEndpoint(string name) => Server.GetCloudEndpoint(name);

    /// <summary>Connects a public client to a cloud endpoint.</summary>
    public async Task<Socket> ConnectClientAsync(string cloudEndpoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(CloudEndpoint(cloudEndpoint)).DefaultTimeout();
        return socket;
    }

    /// <summary>
    /// Connects a public client and waits for the relay to close it: true when it was closed (FIN or reset, even
    /// one so quick that the connect itself reports it), false when data arrived instead.
    /// </summary>
    public Task<bool> ConnectAndWaitForCloseAsync(string cloudEndpoint) => SocketTestExtensions.ConnectAndWaitForCloseAsync(CloudEndpoint(cloudEndpoint));

    public async ValueTask DisposeAsync()
    {
        foreach (var session in _sessions)
        {
            await session.DisposeAsync().DefaultTimeout();
        }

        await Server.DisposeAsync().DefaultTimeout();
    }
}
