using System.Net;
using System.Net.Sockets;
using System.Text;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A real redis-server (Debian's package) on 127.0.0.1, in memory only, stopped on dispose. Without redis-server the
/// test is skipped with how to install it, unless SITELINK_REQUIRE_REAL_SERVERS=1 (as .ci/run sets, after installing
/// it), where it fails.
/// </summary>
internal sealed class RedisServer : IAsyncDisposable
{
    private readonly ProcessRunner _process;

    private RedisServer(ProcessRunner process, int port)
    {
        _process = process;
        Port = port;
    }

    public int Port { get; }

    public static async Task<RedisServer> StartAsync()
    {
        var executable = new[] { "/usr/bin/redis-server", "/usr/local/bin/redis-server" }.FirstOrDefault(File.Exists);
        if (executable is null)
        {
            RealServers.Missing("redis-server is not installed (sudo apt-get install redis-server; .ci/run installs it).");
        }

        // redis cannot bind port 0: take a free port, and try again should another process grab it first.
        for (var attempt = 1; ; attempt++)
        {
            var port = RealServers.FreePort();
            var process = ProcessRunner.Start(executable!, ["--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes"]);
            try
            {
                await process.WaitForLineAsync("Ready to accept connections", TimeSpan.FromSeconds(20));
                return new RedisServer(process, port);
            }
            catch (AssertionException) when (attempt < 3)
            {
                await process.DisposeAsync();
            }
        }
    }

    /// <summary>Sends one command in RESP and reads one reply: a simple string, an error, or a bulk string.</summary>
    public static async Task<byte[]?> CommandAsync(Socket socket, params byte[][] arguments)
    {
        var request = new MemoryStream();
        request.Write(Encoding.ASCII.GetBytes($"*{arguments.Length}\r\n"));
        foreach (var argument in arguments)
        {
            request.Write(Encoding.ASCII.GetBytes($"${argument.Length}\r\n"));
            request.Write(argument);
            request.Write("\r\n"u8);
        }

        await socket.SendAllAsync(request.ToArray()).DefaultTimeout();
        var line = await ReadLineAsync(socket);
        return line[0] switch
        {
            (byte)'+' => line[1..],
            (byte)'$' when line.AsSpan(1).SequenceEqual("-1"u8) => null,
            (byte)'$' => await ReadBulkAsync(socket, int.Parse(Encoding.ASCII.GetString(line, 1, line.Length - 1), System.Globalization.CultureInfo.InvariantCulture)),
            _ => throw new InvalidOperationException("redis answered: " + Encoding.ASCII.GetString(line)),
        };
    }

    public ValueTask DisposeAsync() => _process.DisposeAsync();

    private static async Task<byte[]> ReadBulkAsync(Socket socket, int length)
    {
        var data = new byte[length + 2];
        var read = 0;
        while (read < data.Length)
        {
            var n = await socket.ReceiveAsync(data.AsMemory(read), SocketFlags.None).AsTask().DefaultTimeout();
            if (n == 0)
            {
                throw new EndOfStreamException("redis closed the connection mid-reply");
            }

            read += n;
        }

        return data[..length];
    }

    private static async Task<byte[]> ReadLineAsync(Socket socket)
    {
        var line = new List<byte>();
        var one = new byte[1];
        while (true)
        {
            if (await socket.ReceiveAsync(one.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout() == 0)
            {
                throw new EndOfStreamException("redis closed the connection");
            }

            if (one[0] == '\n' && line.Count > 0 && line[^1] == '\r')
            {
                return [.. line.Take(line.Count - 1)];
            }

            line.Add(one[0]);
        }
    }
}
