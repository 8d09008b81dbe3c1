using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A real HTTP CONNECT proxy (Debian's tinyproxy) on 127.0.0.1, optionally requiring Basic credentials, with its log
/// (every CONNECT it was asked for) readable by the test. It can be stopped and started again on the same port, as a
/// corporate proxy restarting. Without the binary the test is skipped with how to install it, unless
/// SITELINK_REQUIRE_REAL_SERVERS=1 (as .ci/run sets), where it fails.
/// </summary>
internal sealed class TinyproxyServer : IAsyncDisposable
{
    private readonly DirectoryInfo _folder;
    private readonly string _executable;
    private ProcessRunner? _process;

    private TinyproxyServer(string executable, DirectoryInfo folder, int port)
    {
        _executable = executable;
        _folder = folder;
        Port = port;
    }

    public int Port { get; }

    public Uri Address => new($"http://127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}");

    private string LogPath => Path.Combine(_folder.FullName, "tinyproxy.log");

    /// <summary>What tinyproxy logged (connections and the CONNECT request lines).</summary>
    public string Log => File.Exists(LogPath) ? File.ReadAllText(LogPath) : "";

    /// <summary>The CONNECT requests tinyproxy received, e.g. <c>CONNECT 127.0.0.1:43121 HTTP/1.1</c>.</summary>
    public IReadOnlyList<string> ConnectRequests =>
        Log.Split('\n').Select(l => l.IndexOf("Request (file descriptor", StringComparison.Ordinal) is var i and >= 0 ? l[(l.IndexOf("): ", i, StringComparison.Ordinal) + 3)..].Trim() : null)
            .OfType<string>().Where(r => r.StartsWith("CONNECT ", StringComparison.Ordinal)).ToList();

    public static async Task<TinyproxyServer> StartAsync(string? user = null, string? password = null)
    {
        var executable = new[] { "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy" }.FirstOrDefault(File.Exists);
        if (executable is null)
        {
            RealServers.Missing("tinyproxy is not installed (sudo apt-get install tinyproxy; .ci/run installs it).");
        }

        // tinyproxy does not bind port 0 and report it: take a free port, and try again should another process grab it.
        for (var attempt = 1; ; attempt++)
        {
            var folder = Directory.CreateTempSubdirectory("sitelink-tinyproxy-");
            var server = new TinyproxyServer(executable!, folder, RealServers.FreePort());
            File.WriteAllText(Path.Combine(folder.FullName, "tinyproxy.conf"), $"""
                Port {server.Port.ToString(CultureInfo.InvariantCulture)}
                Listen 127.0.0.1
                Timeout 60
                LogFile "{server.LogPath}"
                LogLevel Connect
                MaxClients 200
                Allow 127.0.0.1
                DisableViaHeader Yes
                {(user is null ? "" : $"BasicAuth {user} {password}")}

                """);
            if (await server.TryStartAsync())
            {
                return server;
            }

            var output = server._process?.AllOutput + server.Log;
            await server.DisposeAsync();
            if (attempt == 3)
            {
                Assert.Fail($"tinyproxy did not start:{Environment.NewLine}{output}");
            }
        }
    }

    /// <summary>Stops the proxy (connections through it break); <see cref="RestartAsync"/> starts it again on the same port.</summary>
    public async Task StopAsync()
    {
        if (_process is { } process)
        {
            _process = null;
            await process.DisposeAsync();
        }
    }

    public async Task RestartAsync()
    {
        await StopAsync();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await TryStartAsync())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"tinyproxy did not start again on port {Port}:{Environment.NewLine}{Log}");
            }

            await Task.Delay(100);
        }
    }

    private async Task<bool> TryStartAsync()
    {
        var process = ProcessRunner.Start(_executable, ["-d", "-c", Path.Combine(_folder.FullName, "tinyproxy.conf")], _folder.FullName);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline && !process.HasExited)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, Port));
                _process = process;
                return true;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }

        await process.DisposeAsync();
        return false;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        try
        {
            _folder.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
