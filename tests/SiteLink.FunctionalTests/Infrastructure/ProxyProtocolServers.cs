using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// Real servers that read a PROXY protocol header (Debian's nginx and haproxy), on 127.0.0.1, each answering an HTTP
/// request with the client address and port the header gave it: <c>addr=… port=…</c>. Without the binary the test is
/// skipped with how to install it, unless SITELINK_REQUIRE_REAL_SERVERS=1 (as .ci/run sets), where it fails.
/// </summary>
internal sealed class ProxyProtocolServer : IAsyncDisposable
{
    private readonly ProcessRunner _process;
    private readonly DirectoryInfo _folder;

    private ProxyProtocolServer(ProcessRunner process, DirectoryInfo folder, int port)
    {
        _process = process;
        _folder = folder;
        Port = port;
    }

    public int Port { get; }

    public Uri Uri => Loopback.Tcp(Port);

    public string Output => _process.AllOutput;

    /// <summary>nginx with <c>listen … proxy_protocol</c> (versions 1 and 2), answering <c>$proxy_protocol_addr</c>/<c>_port</c>.</summary>
    public static Task<ProxyProtocolServer> NginxAsync() => StartAsync("nginx", ["/usr/sbin/nginx", "/usr/bin/nginx"], (folder, port) =>
    {
        var p = folder.FullName;
        File.WriteAllText(Path.Combine(p, "nginx.conf"), $$"""
            daemon off;
            master_process off;
            pid {{p}}/nginx.pid;
            error_log stderr notice;
            events { worker_connections 64; }
            http {
                access_log off;
                client_body_temp_path {{p}}/body;
                proxy_temp_path {{p}}/proxy;
                fastcgi_temp_path {{p}}/fastcgi;
                uwsgi_temp_path {{p}}/uwsgi;
                scgi_temp_path {{p}}/scgi;
                server {
                    listen 127.0.0.1:{{port}} proxy_protocol;
                    location / {
                        default_type text/plain;
                        return 200 "addr=$proxy_protocol_addr port=$proxy_protocol_port\n";
                    }
                }
            }
            """);
        return ["-c", Path.Combine(p, "nginx.conf"), "-p", p, "-e", "stderr"];
    });

    /// <summary>haproxy with <c>bind … accept-proxy</c> (versions 1 and 2), answering <c>%[src]</c>/<c>%[src_port]</c>.</summary>
    public static Task<ProxyProtocolServer> HaproxyAsync() => StartAsync("haproxy", ["/usr/sbin/haproxy", "/usr/bin/haproxy"], (folder, port) =>
    {
        File.WriteAllText(Path.Combine(folder.FullName, "haproxy.cfg"), $$"""
            global
                log stderr format raw local0 notice
            defaults
                mode http
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend proxied
                bind 127.0.0.1:{{port}} accept-proxy
                http-request return status 200 content-type text/plain lf-string "addr=%[src] port=%[src_port]\n"

            """);
        return ["-f", Path.Combine(folder.FullName, "haproxy.cfg"), "-db"];
    });

    private static async Task<ProxyProtocolServer> StartAsync(string name, string[] candidates, Func<DirectoryInfo, int, string[]> configure)
    {
        var executable = candidates.FirstOrDefault(File.Exists);
        if (executable is null)
        {
            RealServers.Missing($"{name} is not installed (sudo apt-get install {name}; .ci/run installs it).");
        }

        // Neither binds port 0 and reports it: take a free port, and try again should another process grab it first.
        for (var attempt = 1; ; attempt++)
        {
            var folder = Directory.CreateTempSubdirectory($"sitelink-{name}-");
            var port = RealServers.FreePort();
            var process = ProcessRunner.Start(executable!, configure(folder, port), folder.FullName);
            if (await AcceptsAsync(port, process))
            {
                return new ProxyProtocolServer(process, folder, port);
            }

            var output = process.AllOutput;
            await process.DisposeAsync();
            folder.Delete(recursive: true);
            if (attempt == 3)
            {
                Assert.Fail($"{name} did not start on 127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}:{Environment.NewLine}{output}");
            }
        }
    }

    private static async Task<bool> AcceptsAsync(int port, ProcessRunner process)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline && !process.HasExited)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
                return true;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }

        return false;
    }

    public async ValueTask DisposeAsync()
    {
        await _process.DisposeAsync();
        try
        {
            _folder.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
