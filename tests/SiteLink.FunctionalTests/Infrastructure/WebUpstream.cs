using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A real HTTP/1.1 server (Kestrel on 127.0.0.1:0) standing in for a customer's web API behind the agent:
/// <c>/headers</c> echoes the request's host and forwarding headers, <c>/sha256</c> hashes the request body,
/// <c>/bytes?size=N</c> streams N deterministic bytes, <c>/ws</c> echoes WebSocket messages. Counts the TCP
/// connections it accepted, so tests can see keep-alive reuse.
/// </summary>
internal sealed class WebUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _connections;

    private readonly string _name;

    private WebUpstream(WebApplication app, string name)
    {
        _app = app;
        _name = name;
    }

    public int Port { get; private set; }

    public Uri Uri => Loopback.Tcp(Port);

    public int Connections => Volatile.Read(ref _connections);

    public static async Task<WebUpstream> StartAsync(string name = "upstream")
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1);
        });
        var app = builder.Build();
        var upstream = new WebUpstream(app, name);
        app.Use(async (context, next) =>
        {
            if (context.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>() is { } items && !items.Items.ContainsKey("counted"))
            {
                items.Items["counted"] = true;
                Interlocked.Increment(ref upstream._connections);
            }

            await next(context);
        });
        app.UseWebSockets();
        app.Run(upstream.HandleAsync);
        upstream.Port = (await app.StartAndGetAddressAsync()).Port;
        return upstream;
    }

    private async Task HandleAsync(HttpContext context)
    {
        switch (context.Request.Path.Value)
        {
            case "/headers":
                var lines = new[] { "Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded" }
                    .Select(h => $"{h}: {context.Request.Headers[h]}");
                await context.Response.WriteAsync($"Upstream: {_name}\n" + string.Join("\n", lines) + "\n");
                break;
            case "/all-headers":
                await context.Response.WriteAsync(string.Concat(context.Request.Headers.OrderBy(h => h.Key, StringComparer.OrdinalIgnoreCase).Select(h => $"{h.Key}: {h.Value}\n")));
                break;
            case "/sha256":
                using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
                {
                    var buffer = new byte[64 * 1024];
                    long total = 0;
                    int read;
                    while ((read = await context.Request.Body.ReadAsync(buffer)) > 0)
                    {
                        hash.AppendData(buffer, 0, read);
                        total += read;
                    }

                    await context.Response.WriteAsync($"{Convert.ToHexString(hash.GetHashAndReset())} {total}");
                }

                break;
            case "/bytes":
                var size = long.Parse(context.Request.Query["size"]!, System.Globalization.CultureInfo.InvariantCulture);
                context.Response.ContentLength = size;
                var block = Pattern();
                for (long sent = 0; sent < size; sent += block.Length)
                {
                    await context.Response.Body.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, size - sent)));
                }

                break;
            case "/ws" when context.WebSockets.IsWebSocketRequest:
                using (var socket = await context.WebSockets.AcceptWebSocketAsync())
                {
                    var buffer = new byte[64 * 1024];
                    while (true)
                    {
                        var message = await socket.ReceiveAsync(buffer, CancellationToken.None);
                        if (message.MessageType == WebSocketMessageType.Close)
                        {
                            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                            break;
                        }

                        await socket.SendAsync(buffer.AsMemory(0, message.Count), message.MessageType, message.EndOfMessage, CancellationToken.None);
                    }
                }

                break;
            default:
                context.Response.StatusCode = 404;
                break;
        }
    }

    /// <summary>The 64 KiB block /bytes repeats: byte i is (i * 31 + 7) mod 256.</summary>
    public static byte[] Pattern()
    {
        var block = new byte[64 * 1024];
        for (var i = 0; i < block.Length; i++)
        {
            block[i] = (byte)((i * 31) + 7);
        }

        return block;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().DefaultTimeout();
        await _app.DisposeAsync();
    }
}
