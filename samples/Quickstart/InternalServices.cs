using System.Net;
using System.Net.Sockets;

/// <summary>A TCP echo service on loopback, standing in for a customer's internal service.</summary>
internal sealed class EchoServer : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    public static EchoServer Start()
    {
        var server = new EchoServer();
        server._listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        server._listener.Listen(128);
        server._loop = server.AcceptLoopAsync();
        return server;
    }

    private async Task AcceptLoopAsync()
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            client.NoDelay = true;
            _ = EchoAsync(client);
        }
    }

    private async Task EchoAsync(Socket client)
    {
        using (client)
        {
            var buffer = new byte[64 * 1024];
            try
            {
                int read;
                while ((read = await client.ReceiveAsync(buffer, SocketFlags.None, _stop.Token)) > 0)
                {
                    await client.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, _stop.Token);
                }

                client.Shutdown(SocketShutdown.Send);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _loop;
        _stop.Dispose();
    }
}

/// <summary>A tiny HTTP API on loopback, standing in for a customer's internal web service.</summary>
internal sealed class InternalWebService : IAsyncDisposable
{
    private readonly WebApplication _app;

    private InternalWebService(WebApplication app, Uri url)
    {
        _app = app;
        Url = url;
    }

    public Uri Url { get; }

    public static async Task<InternalWebService> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        app.MapGet("/", () => Results.Text("SiteLink quickstart internal web service. Try /inventory\n"));
        app.MapGet("/inventory", () => Results.Text("{\"service\":\"inventory\",\"items\":3,\"source\":\"inside the customer network\"}\n", "application/json"));
        await app.StartAsync();
        return new InternalWebService(app, new Uri(app.Urls.First()));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
