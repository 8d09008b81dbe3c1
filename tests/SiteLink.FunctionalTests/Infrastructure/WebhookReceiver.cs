using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>One POST the receiver got: the CloudEvent, its headers, whether its signature verified, and when it came.</summary>
internal sealed record ReceivedEvent(
    string Id, string Type, string Tenant, string Subject, JsonElement Root, string Body, IReadOnlyDictionary<string, string> Headers,
    int Attempt, bool SignatureValid, long ReceivedAt, int Status)
{
    public JsonElement Data => Root.GetProperty("data");

    public string? DataString(string name) => Data.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
}

/// <summary>
/// A vendor's webhook endpoint: a real Kestrel server on 127.0.0.1 (port 0, or a given port to come back on) that
/// records every POST, verifies its <c>SiteLink-Signature</c> the way docs/operations.md tells receivers to, and answers
/// as the test says (204 by default; a status, or never).
/// </summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    public const string Secret = "whsec-test-0123456789abcdef";

    private readonly WebApplication _app;
    private readonly ConcurrentQueue<ReceivedEvent> _requests = new();
    private readonly CancellationTokenSource _stopping = new();

    private WebhookReceiver(WebApplication app)
    {
        _app = app;
    }

    public int Port { get; private set; }

    public Uri Url => new($"http://127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}/hooks/sitelink?key=not-logged");

    /// <summary>What to answer; 204 when null. Return 0 to never answer (until the relay gives up or the receiver stops).</summary>
    public Func<ReceivedEvent, int>? Answer { get; set; }

    /// <summary>Every request, answered or not, in arrival order.</summary>
    public IReadOnlyList<ReceivedEvent> Requests => [.. _requests];

    /// <summary>The events it accepted (answered 2xx), in arrival order.</summary>
    public IReadOnlyList<ReceivedEvent> Delivered => [.. _requests.Where(r => r.Status is >= 200 and < 300)];

    public IReadOnlyList<ReceivedEvent> DeliveredOf(string type) => [.. Delivered.Where(r => r.Type == type)];

    public static async Task<WebhookReceiver> StartAsync(int port = 0)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port, o => o.Protocols = HttpProtocols.Http1));
        var app = builder.Build();
        var receiver = new WebhookReceiver(app);
        app.Run(receiver.HandleAsync);
        receiver.Port = (await app.StartAndGetAddressAsync()).Port;
        return receiver;
    }

    /// <summary>A webhook of <paramref name="tenant"/> (or <c>*</c>) for these events (all when none), delivered here.</summary>
    public WebhookOptions Webhook(string id = "vendor", string tenant = "acme", params string[] events)
    {
        var webhook = new WebhookOptions { Id = id, Tenant = tenant, Url = Url.ToString(), Secret = Secret };
        foreach (var type in events.Length == 0 ? Relay.Events.RelayEventTypes.All : events)
        {
            webhook.Events.Add(type);
        }

        return webhook;
    }

    private async Task HandleAsync(HttpContext context)
    {
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
        var receivedAt = Stopwatch.GetTimestamp();
        var body = buffer.ToArray();
        var root = JsonDocument.Parse(body).RootElement.Clone();
        var headers = context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase);
        var valid = VerifySignature(context.Request.Headers["SiteLink-Signature"], body, Secret, DateTimeOffset.UtcNow, TimeSpan.FromMinutes(5));
        var pending = new ReceivedEvent(
            root.GetProperty("id").GetString()!, root.GetProperty("type").GetString()!, root.GetProperty("tenant").GetString()!,
            root.GetProperty("subject").GetString()!, root, Encoding.UTF8.GetString(body), headers,
            int.Parse(headers["SiteLink-Delivery-Attempt"], CultureInfo.InvariantCulture), valid, receivedAt, 0);
        var status = Answer?.Invoke(pending) ?? 204;
        _requests.Enqueue(pending with { Status = status });
        if (status == 0)
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token);
            await Task.Delay(Timeout.Infinite, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            return;
        }

        context.Response.StatusCode = status;
        if (status >= 400)
        {
            await context.Response.WriteAsync("maintenance");
        }
    }

    /// <summary>
    /// How a receiver checks a delivery (the snippet in docs/operations.md): <c>t</c> within the replay window, then the
    /// HMAC-SHA256 of "t.body" (the raw bytes, before any JSON parsing) compared in constant time.
    /// </summary>
    public static bool VerifySignature(string? header, byte[] body, string secret, DateTimeOffset now, TimeSpan tolerance)
    {
        string? t = null, v1 = null;
        foreach (var part in (header ?? "").Split(','))
        {
            var pair = part.Split('=', 2);
            if (pair.Length == 2 && pair[0].Trim() == "t")
            {
                t = pair[1].Trim();
            }
            else if (pair.Length == 2 && pair[0].Trim() == "v1")
            {
                v1 = pair[1].Trim();
            }
        }

        if (t is null || v1 is null || v1.Length != 64 || !long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var unixSeconds))
        {
            return false;
        }

        if ((now - DateTimeOffset.FromUnixTimeSeconds(unixSeconds)).Duration() > tolerance)
        {
            return false; // too old (a replay) or from the future
        }

        var signed = Encoding.ASCII.GetBytes(t + ".").Concat(body).ToArray();
        var expected = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), signed);
        return v1.All(char.IsAsciiHexDigit) && CryptographicOperations.FixedTimeEquals(expected, Convert.FromHexString(v1));
    }

    /// <summary>Closes the port: the relay's next attempts find nobody listening.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        await _app.StopAsync().DefaultTimeout();
        await _app.DisposeAsync();
        _stopping.Dispose();
    }
}
