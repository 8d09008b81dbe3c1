// Uses SiteLink.Sdk as a package: connects to a real relay (the repository's, started here as a process on loopback),
// serves a forward, a handler and a listener endpoint, and checks megabytes through each with SHA-256; then serves a
// minimal API through SiteLink.AspNetCore (Kestrel with no local port) and fetches it through the relay.
// Exit code 0 when everything arrived intact; 1 with the reason otherwise.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SiteLink;

if (args.Length != 2 || args[0] != "--relay-dll")
{
    Console.Error.WriteLine("usage: PackageConsumer --relay-dll <path to SiteLink.Relay.dll>");
    return 2;
}

var sdk = typeof(TunnelSession).Assembly;
static string FileVersion(Type type) => FileVersionInfo.GetVersionInfo(type.Assembly.Location).FileVersion ?? "?";
Console.WriteLine($"runtime {RuntimeInformation.FrameworkDescription}; SiteLink.Sdk {FileVersion(typeof(TunnelSession))} built for "
    + $"{sdk.GetCustomAttributes(typeof(System.Runtime.Versioning.TargetFrameworkAttribute), false).OfType<System.Runtime.Versioning.TargetFrameworkAttribute>().Single().FrameworkName}");
Console.WriteLine($"Grpc.Net.Client {FileVersion(typeof(Grpc.Net.Client.GrpcChannel))}, Google.Protobuf {FileVersion(typeof(Google.Protobuf.ByteString))}");

// Configuration binding as a host does it (source-generated on net10.0, reflection on net8.0): every kind of option.
{
    var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
    {
        ["SiteLink:RelayUrl"] = "https://relay.example:8443",
        ["SiteLink:AuthToken"] = "consumer-config-token-0123456789",
        ["SiteLink:HeartbeatInterval"] = "00:00:07",
        ["SiteLink:Reconnect:MaxDelay"] = "00:02:00",
        ["SiteLink:Metadata:site"] = "plant-9",
        ["SiteLink:Endpoints:0:Name"] = "db",
        ["SiteLink:Endpoints:0:Upstream"] = "tcp://10.0.0.12:5432",
        ["SiteLink:Endpoints:0:Description"] = "Plant database",
        ["SiteLink:Endpoints:0:Metadata:engine"] = "postgresql",
    }).Build();
    var services = new ServiceCollection();
    services.AddSingleton<IConfiguration>(configuration);
    services.AddSiteLink();
    using var provider = services.BuildServiceProvider();
    var bound = provider.GetRequiredService<IOptions<TunnelSessionOptions>>().Value;
    var endpoint = bound.Endpoints.Single();
    var seen = $"{bound.RelayUrl} {bound.HeartbeatInterval} {bound.Reconnect.MaxDelay} {bound.Metadata["site"]} {endpoint.Name} {endpoint.Upstream} {endpoint.Description} {endpoint.Metadata["engine"]}";
    const string expected = "https://relay.example:8443/ 00:00:07 00:02:00 plant-9 db tcp://10.0.0.12:5432 Plant database postgresql";
    if (seen != expected)
    {
        Console.Error.WriteLine($"configuration binding: got '{seen}', expected '{expected}'");
        return 1;
    }

    Console.WriteLine("configuration binding: every option bound");
}

var folder = Directory.CreateTempSubdirectory("sitelink-consumer-");
const string Token = "package-consumer-token-0123456789abcdef";
File.WriteAllText(Path.Combine(folder.FullName, "relay.json"), $$"""
{
  "Relay": {
    "RelayId": "package-consumer",
    "AgentListen": "127.0.0.1:0",
    "Tls": { "DevelopmentCertificatePath": "relay-dev-cert.pfx" },
    "Tokens": [ { "Name": "consumer", "Token": "{{Token}}", "Tenant": "pkg", "Allow": [ "*" ] } ],
    "CloudEndpoints": [
      { "Name": "pkg-forward", "Listen": "127.0.0.1:0", "Tenant": "pkg", "Endpoint": "forward" },
      { "Name": "pkg-handler", "Listen": "127.0.0.1:0", "Tenant": "pkg", "Endpoint": "handler" },
      { "Name": "pkg-listener", "Listen": "127.0.0.1:0", "Tenant": "pkg", "Endpoint": "listener" },
      { "Name": "pkg-web", "Listen": "127.0.0.1:0", "Tenant": "pkg", "Endpoint": "web" }
    ]
  }
}
""");

using var relay = new RelayProcess(args[1], Path.Combine(folder.FullName, "relay.json"));
try
{
    var agentUrl = await relay.WaitForAsync(@"listening for agents on (https://\S+)");
    var pin = await relay.WaitForAsync(@"pin it in agents\): ([0-9A-F]{64})");
    var ports = new Dictionary<string, int>();
    foreach (var name in new[] { "pkg-forward", "pkg-handler", "pkg-listener" })
    {
        ports[name] = int.Parse(await relay.WaitForAsync($@"Cloud endpoint '{name}' on tcp://127\.0\.0\.1:(\d+)"), System.Globalization.CultureInfo.InvariantCulture);
    }

    var webPort = await relay.WaitForAsync(@"Cloud endpoint 'pkg-web' on tcp://127\.0\.0\.1:(\d+)");

    // An internal TCP service: echoes what it reads.
    using var upstream = new TcpListener(IPAddress.Loopback, 0);
    upstream.Start();
    _ = Task.Run(async () =>
    {
        while (true)
        {
            var socket = await upstream.AcceptSocketAsync();
            _ = Task.Run(async () =>
            {
                using (socket)
                await using (var stream = new NetworkStream(socket))
                {
                    await stream.CopyToAsync(stream);
                    socket.Shutdown(SocketShutdown.Send);
                }
            });
        }
    });

    await using var session = await TunnelSession.ConnectAsync(new TunnelSessionOptions
    {
        RelayUrl = new Uri(agentUrl),
        AuthToken = Token,
        PinnedCertificateSha256 = pin,
        ClientId = "package-consumer",
    });
    await session.ForwardAsync("forward", new Uri($"tcp://127.0.0.1:{((IPEndPoint)upstream.LocalEndpoint).Port}"), new EndpointOptions { Description = "echo service" });
    await session.BindHandlerAsync("handler", async (connection, ct) =>
    {
        await connection.Transport.Input.CopyToAsync(connection.Transport.Output, ct);
        await connection.Transport.Output.CompleteAsync();
    });
    var listener = await session.ListenAsync("listener");
    _ = Task.Run(async () =>
    {
        await foreach (var connection in listener.AcceptAllAsync())
        {
            _ = Task.Run(async () =>
            {
                await using (connection)
                {
                    await connection.Stream.CopyToAsync(connection.Stream);
                    await connection.Stream.CompleteWritesAsync();
                }
            });
        }
    });

    foreach (var (name, port) in ports)
    {
        var (sent, received) = await EchoAsync(port, 8 * 1024 * 1024);
        Console.WriteLine($"{name}: 8 MiB echoed, SHA-256 {(sent == received ? "matches" : "DIFFERS")}");
        if (sent != received)
        {
            return 1;
        }
    }

    // The public test factory works from the package too.
    await using (var pair = TunnelConnection.CreateInMemory())
    {
        await pair.Client.WriteAsync("ping"u8.ToArray());
        var buffer = new byte[4];
        await pair.Connection.Stream.ReadExactlyAsync(buffer);
        if (!buffer.AsSpan().SequenceEqual("ping"u8))
        {
            Console.Error.WriteLine("in-memory connection: wrong bytes");
            return 1;
        }
    }

    // SiteLink.AspNetCore: a minimal API served by Kestrel over the "web" endpoint only, through the same session.
    var builder = WebApplication.CreateSlimBuilder();
    builder.Logging.ClearProviders();
    builder.WebHost.UseSiteLink(o => o.Session = session);
    builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenSiteLink("web"));
    await using (var app = builder.Build())
    {
        app.MapGet("/", (HttpContext context) => $"hello {context.Connection.RemoteIpAddress}");
        await app.StartAsync();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        var reply = await http.GetStringAsync($"http://127.0.0.1:{webPort}/");
        Console.WriteLine($"SiteLink.AspNetCore: '{reply}'");
        await app.StopAsync();
        if (reply != "hello 127.0.0.1")
        {
            Console.Error.WriteLine("SiteLink.AspNetCore: wrong reply");
            return 1;
        }
    }

    await session.CloseAsync();
    Console.WriteLine($"OK: the SiteLink.Sdk and SiteLink.AspNetCore packages work on {RuntimeInformation.FrameworkDescription}.");
    return 0;
}
catch (Exception ex)
{
    Console.Error.WriteLine($"FAILED: {ex}");
    Console.Error.WriteLine("relay output:");
    Console.Error.WriteLine(relay.Output);
    return 1;
}
finally
{
    relay.Dispose();
    try
    {
        folder.Delete(recursive: true);
    }
    catch (IOException)
    {
    }
}

static async Task<(string Sent, string Received)> EchoAsync(int port, int size)
{
    var payload = RandomNumberGenerator.GetBytes(size);
    using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
    await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), timeout.Token);
    await using var stream = new NetworkStream(client);
    var reading = Task.Run(async () =>
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        int n;
        while ((n = await stream.ReadAsync(buffer, timeout.Token)) > 0)
        {
            hash.AppendData(buffer, 0, n);
        }

        return Convert.ToHexString(hash.GetHashAndReset());
    });
    for (var offset = 0; offset < size; offset += 64 * 1024)
    {
        await stream.WriteAsync(payload.AsMemory(offset, Math.Min(64 * 1024, size - offset)), timeout.Token);
    }

    client.Shutdown(SocketShutdown.Send);
    return (Convert.ToHexString(SHA256.HashData(payload)), await reading);
}

/// <summary>The repository's relay, run as a process; its output read line by line.</summary>
internal sealed class RelayProcess : IDisposable
{
    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly SemaphoreSlim _changed = new(0);

    public RelayProcess(string relayDll, string config)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(relayDll);
        start.ArgumentList.Add("--config");
        start.ArgumentList.Add(config);
        _process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start");
        _process.OutputDataReceived += (_, e) => Add(e.Data);
        _process.ErrorDataReceived += (_, e) => Add(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Output
    {
        get
        {
            lock (_lines)
            {
                return string.Join(Environment.NewLine, _lines);
            }
        }
    }

    private void Add(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lines)
        {
            _lines.Add(line);
        }

        _changed.Release();
    }

    /// <summary>The first group of the first output line matching <paramref name="pattern"/>, waiting up to 60 s.</summary>
    public async Task<string> WaitForAsync(string pattern)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(60))
        {
            lock (_lines)
            {
                foreach (var line in _lines)
                {
                    if (Regex.Match(line, pattern) is { Success: true } match)
                    {
                        return match.Groups[1].Value;
                    }
                }
            }

            if (_process.HasExited)
            {
                throw new InvalidOperationException($"the relay exited ({_process.ExitCode}) before printing /{pattern}/");
            }

            await _changed.WaitAsync(TimeSpan.FromSeconds(1));
        }

        throw new TimeoutException($"the relay did not print /{pattern}/ within 60 s");
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
        }

        _process.Dispose();
    }
}
