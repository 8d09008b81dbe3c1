// SiteLink quickstart: one process plays all four parts, each over real loopback sockets.
//
//   public client ──► relay cloud endpoint ──► (agent's outbound HTTP/2 + TLS connection) ──► agent ──► internal service
//
// 1. an embedded relay (the vendor's cloud), TLS with a generated certificate the agent pins;
// 2. two internal services (a TCP echo server and a tiny HTTP API) that listen only on loopback;
// 3. an agent session (the SDK) that dials out to the relay and binds "echo", "web", an in-process "hello", and
//    "echo-tls", whose TLS ends at the agent (the relay passes it through by server name, seeing only ciphertext);
// 4. clients that push real traffic through the relay's public endpoints and check every byte — "web" also by host
//    name, through an http cloud endpoint.
//
// dotnet run --project samples/Quickstart            runs the demo, then serves until Ctrl+C
// dotnet run --project samples/Quickstart -- --once  runs the demo and exits: 0 if everything went through intact
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using SiteLink;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Hosting;

var once = args.Contains("--once");
var sizeMiB = ReadIntArgument(args, "--size-mib", 64);
var roundTrips = ReadIntArgument(args, "--round-trips", 1000);
using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};
// SIGTERM (a service manager, `timeout`, `kill`) stops it the same way: the embedded relay's host would otherwise hold
// the process open waiting for Main to return, which waits for Ctrl+C.
using var terminate = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});

// 2. Internal services, reachable only on this machine's loopback.
await using var echo = EchoServer.Start();
await using var web = await InternalWebService.StartAsync();
Console.WriteLine($"Internal services: echo on {echo.EndPoint}, web on {web.Url}");

// 1. The relay, with one token for tenant "quickstart" and a public endpoint per internal endpoint. The token is random,
// or the one in SITELINK_AUTHTOKEN when set (16 characters or more), so that the standalone agent (and the commands of
// docs/customer-guide.md) can be tried against this relay without the token ever being printed.
var token = Environment.GetEnvironmentVariable("SITELINK_AUTHTOKEN") is { Length: >= 16 } chosen
    ? chosen
    : Convert.ToHexString(RandomNumberGenerator.GetBytes(24));
var relayOptions = new RelayOptions { RelayId = "quickstart-relay", Region = "local", AgentListen = "127.0.0.1:0" };
var tokenOptions = new AuthTokenOptions { Name = "quickstart-agent", Token = token, Tenant = "quickstart" };
tokenOptions.Allow.Add("*");
relayOptions.Tokens.Add(tokenOptions);
foreach (var name in new[] { "echo", "web", "hello" })
{
    relayOptions.CloudEndpoints.Add(new CloudEndpointOptions { Name = name, Listen = "127.0.0.1:0", Tenant = "quickstart", Endpoint = name });
}

// The same web service by host name (http: many customers can share this port), and the echo service over TLS that
// the relay routes by server name without decrypting it (tls).
const string WebHost = "web.quickstart.localhost";
const string EchoTlsHost = "echo.quickstart.localhost";
var webByName = new CloudEndpointOptions { Name = "web-by-name", Protocol = "http", Listen = "127.0.0.1:0", Tenant = "quickstart", Endpoint = "web" };
webByName.Hostnames.Add(WebHost);
var echoTls = new CloudEndpointOptions { Name = "echo-tls", Protocol = "tls", Listen = "127.0.0.1:0", Tenant = "quickstart", Endpoint = "echo-tls" };
echoTls.Hostnames.Add(EchoTlsHost);
relayOptions.CloudEndpoints.Add(webByName);
relayOptions.CloudEndpoints.Add(echoTls);
using var agentCertificate = Demo.SelfSignedCertificate(EchoTlsHost);

await using var relay = await RelayServer.StartAsync(relayOptions);
Console.WriteLine($"Relay: agents connect to {relay.AgentUrl} (certificate SHA-256 {relay.CertificateSha256})");

// 3. The agent: dial out, bind three endpoints. Nothing listens in the "customer network" but the services themselves.
await using var session = await TunnelSession.ConnectAsync(new TunnelSessionOptions
{
    RelayUrl = relay.AgentUrl,
    AuthToken = token,
    PinnedCertificateSha256 = relay.CertificateSha256,
    ClientId = "quickstart-agent",
});
await session.ForwardAsync("echo", new Uri($"tcp://{echo.EndPoint}"), new EndpointOptions { Description = "TCP echo service" });
await session.ForwardAsync("web", new Uri($"tcp://127.0.0.1:{web.Url.Port}"), new EndpointOptions
{
    Description = "Internal web API",
    Metadata = { ["site"] = "quickstart", ["owner"] = "platform-team" },
});
// TLS ends here, at the agent, with a certificate only the agent holds.
await session.ForwardAsync("echo-tls", new Uri($"tcp://{echo.EndPoint}"), new EndpointOptions
{
    Description = "TCP echo service, TLS terminated at the agent",
    TlsServer = new System.Net.Security.SslServerAuthenticationOptions { ServerCertificate = agentCertificate },
});
await session.BindHandlerAsync("hello", async (connection, ct) =>
{
    var greeting = $"Hello {connection.Info.ClientAddress}, this is an in-process handler behind SiteLink.\n";
    await connection.Stream.WriteAsync(Encoding.UTF8.GetBytes(greeting), ct);
});
Console.WriteLine($"Agent: session {session.SessionId} on relay '{session.Relay.RelayId}', bound {string.Join(", ", session.Endpoints.Select(e => e.Name))}");
Console.WriteLine();

// 4. Real traffic through the public endpoints.
var failures = 0;
var echoPublic = relay.GetCloudEndpoint("echo");
var webPublic = relay.GetCloudEndpoint("web");
var helloPublic = relay.GetCloudEndpoint("hello");
var webByNamePublic = relay.GetCloudEndpoint("web-by-name");
var echoTlsPublic = relay.GetCloudEndpoint("echo-tls");

failures += await Demo.TransferAsync(echoPublic, sizeMiB);
failures += await Demo.RoundTripsAsync(echoPublic, echo.EndPoint, roundTrips);
failures += await Demo.HttpAsync(webPublic);
failures += await Demo.HandlerAsync(helloPublic);
failures += await Demo.HttpByNameAsync(webByNamePublic, WebHost);
failures += await Demo.TlsAsync(echoTlsPublic, EchoTlsHost, agentCertificate, relay);

Console.WriteLine();
Console.WriteLine(failures == 0 ? "All traffic went through the tunnel intact." : $"{failures} check(s) FAILED.");
if (once)
{
    return failures == 0 ? 0 : 1;
}

Console.WriteLine();
Console.WriteLine("The tunnel stays up. Try it with ordinary tools:");
var commands = new (string Command, string What)[]
{
    ($"nc {echoPublic.Address} {echoPublic.Port}", "type a line: it comes back through the agent"),
    ($"curl http://{webPublic}/inventory", "the internal web service, reached through the relay"),
    ($"nc {helloPublic.Address} {helloPublic.Port}", "the in-process handler greets you"),
    ($"curl --resolve {WebHost}:{webByNamePublic.Port}:127.0.0.1 http://{WebHost}:{webByNamePublic.Port}/inventory", "the web service by host name (http endpoint)"),
    ($"openssl s_client -quiet -connect {echoTlsPublic} -servername {EchoTlsHost}", "TLS to the agent, routed by name: type a line"),
};
var width = commands.Max(c => c.Command.Length) + 2;
foreach (var (command, what) in commands)
{
    Console.WriteLine($"  {command.PadRight(width)}# {what}");
}

Console.WriteLine();
Console.WriteLine(token == Environment.GetEnvironmentVariable("SITELINK_AUTHTOKEN")
    ? "The standalone agent (and docs/customer-guide.md) can connect to this relay with the token in SITELINK_AUTHTOKEN:"
    : "To try the standalone agent (and docs/customer-guide.md) against this relay, start the quickstart with SITELINK_AUTHTOKEN set (16+ characters), then:");
Console.WriteLine($"  export SiteLink__RelayUrl={relay.AgentUrl} SiteLink__PinnedCertificateSha256={relay.CertificateSha256}");
Console.WriteLine("Press Ctrl+C to stop.");
try
{
    await Task.Delay(Timeout.Infinite, stop.Token);
}
catch (OperationCanceledException)
{
}

Console.WriteLine("Stopping.");
return failures == 0 ? 0 : 1;

static int ReadIntArgument(string[] args, string name, int fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length && int.TryParse(args[index + 1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value > 0
        ? value
        : fallback;
}

/// <summary>The traffic the quickstart pushes through the tunnel, each step checked.</summary>
internal static class Demo
{
    public static async Task<int> TransferAsync(IPEndPoint endpoint, int sizeMiB)
    {
        var payload = RandomNumberGenerator.GetBytes(sizeMiB * 1024 * 1024);
        var sent = SHA256.HashData(payload);
        using var client = await ConnectAsync(endpoint);
        var watch = Stopwatch.StartNew();
        var receiving = HashToEndAsync(client);
        for (var offset = 0; offset < payload.Length; offset += 64 * 1024)
        {
            await client.SendAsync(payload.AsMemory(offset, Math.Min(64 * 1024, payload.Length - offset)), SocketFlags.None);
        }

        client.Shutdown(SocketShutdown.Send);
        var (received, length) = await receiving.WaitAsync(TimeSpan.FromMinutes(2));
        watch.Stop();
        var ok = length == payload.Length && received.AsSpan().SequenceEqual(sent);
        var megabytes = payload.Length / 1_000_000.0;
        Console.WriteLine($"[{Mark(ok)}] echo: {sizeMiB} MiB out and back in {watch.Elapsed.TotalSeconds:F2} s " +
            $"({megabytes / watch.Elapsed.TotalSeconds:F0} MB/s each way); SHA-256 {Convert.ToHexString(sent)[..16]}… sent, {Convert.ToHexString(received)[..16]}… received");
        return ok ? 0 : 1;
    }

    public static async Task<int> RoundTripsAsync(IPEndPoint tunnelled, IPEndPoint direct, int count)
    {
        var viaTunnel = await MeasureRoundTripsAsync(tunnelled, count);
        var viaDirect = await MeasureRoundTripsAsync(direct, count);
        var ok = viaTunnel is not null && viaDirect is not null;
        if (ok)
        {
            Console.WriteLine($"[{Mark(ok)}] echo: {count} one-byte round trips, median {viaTunnel!.Value.Median:F0} µs, p99 {viaTunnel.Value.P99:F0} µs " +
                $"through the tunnel (direct to the service: median {viaDirect!.Value.Median:F0} µs)");
        }
        else
        {
            Console.WriteLine($"[{Mark(ok)}] echo: a one-byte round trip came back wrong");
        }

        return ok ? 0 : 1;
    }

    private static async Task<(double Median, double P99)?> MeasureRoundTripsAsync(IPEndPoint endpoint, int count)
    {
        using var client = await ConnectAsync(endpoint);
        var samples = new double[count];
        var one = new byte[1];
        var back = new byte[1];
        for (var i = 0; i < count; i++)
        {
            one[0] = (byte)i;
            var start = Stopwatch.GetTimestamp();
            await client.SendAsync(one, SocketFlags.None);
            if (await client.ReceiveAsync(back, SocketFlags.None) != 1 || back[0] != one[0])
            {
                return null;
            }

            samples[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }

        Array.Sort(samples);
        return (samples[count / 2], samples[Math.Min(count - 1, (int)(count * 0.99))]);
    }

    public static async Task<int> HttpAsync(IPEndPoint endpoint)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        var response = await http.GetAsync(new Uri($"http://{endpoint}/inventory"));
        var body = await response.Content.ReadAsStringAsync();
        var ok = response.IsSuccessStatusCode && body.Contains("\"service\":\"inventory\"", StringComparison.Ordinal);
        Console.WriteLine($"[{Mark(ok)}] web: GET http://{endpoint}/inventory -> {(int)response.StatusCode} {body.Trim()}");
        return ok ? 0 : 1;
    }

    public static async Task<int> HandlerAsync(IPEndPoint endpoint)
    {
        using var client = await ConnectAsync(endpoint);
        using var stream = new NetworkStream(client);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var line = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var ok = line?.StartsWith("Hello 127.0.0.1:", StringComparison.Ordinal) == true;
        Console.WriteLine($"[{Mark(ok)}] hello: in-process handler said \"{line}\"");
        return ok ? 0 : 1;
    }

    public static async Task<int> HttpByNameAsync(IPEndPoint endpoint, string host)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri($"http://{endpoint}/inventory"));
        request.Headers.Host = $"{host}:{endpoint.Port}";
        using var response = await http.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        var ok = response.IsSuccessStatusCode && body.Contains("\"service\":\"inventory\"", StringComparison.Ordinal);
        Console.WriteLine($"[{Mark(ok)}] web by name: GET http://{host}:{endpoint.Port}/inventory (http endpoint, routed by Host) -> {(int)response.StatusCode}");
        return ok ? 0 : 1;
    }

    public static async Task<int> TlsAsync(IPEndPoint endpoint, string host, System.Security.Cryptography.X509Certificates.X509Certificate2 agentCertificate, RelayServer relay)
    {
        var before = relay.Counters.BytesFromClients;
        using var client = await ConnectAsync(endpoint);
        await using var tls = new System.Net.Security.SslStream(new NetworkStream(client), false,
            (_, certificate, _, _) => certificate?.GetCertHashString(HashAlgorithmName.SHA256) == agentCertificate.GetCertHashString(HashAlgorithmName.SHA256));
        await tls.AuthenticateAsClientAsync(host).WaitAsync(TimeSpan.FromSeconds(30));
        var line = Encoding.UTF8.GetBytes("a secret only the agent can read\n");
        await tls.WriteAsync(line);
        var echoed = new byte[line.Length];
        await tls.ReadExactlyAsync(echoed).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        var ok = echoed.AsSpan().SequenceEqual(line);
        Console.WriteLine($"[{Mark(ok)}] echo-tls: TLS ({tls.SslProtocol}) to the agent's certificate via {host}, echoed; the relay carried {relay.Counters.BytesFromClients - before} bytes of ciphertext");
        return ok ? 0 : 1;
    }

    /// <summary>A self-signed certificate for <paramref name="host"/>, with its key, as a customer's agent might hold.</summary>
    public static System.Security.Cryptography.X509Certificates.X509Certificate2 SelfSignedCertificate(string host)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest($"CN={host}", key, HashAlgorithmName.SHA256);
        var names = new System.Security.Cryptography.X509Certificates.SubjectAlternativeNameBuilder();
        names.AddDnsName(host);
        request.CertificateExtensions.Add(names.Build());
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(30));
        return System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12(created.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12), null);
    }

    private static string Mark(bool ok) => ok ? " ok " : "FAIL";

    private static async Task<Socket> ConnectAsync(IPEndPoint endpoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endpoint).WaitAsync(TimeSpan.FromSeconds(30));
        return socket;
    }

    private static async Task<(byte[] Hash, long Length)> HashToEndAsync(Socket socket)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long total = 0;
        int read;
        while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None)) > 0)
        {
            hash.AppendData(buffer, 0, read);
            total += read;
        }

        return (hash.GetHashAndReset(), total);
    }
}
