using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using SiteLink.Relay.Configuration;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// An HTTP client of a relay's admin API, as a vendor's automation is: HTTPS to the admin listener, the relay's
/// certificate pinned by its SHA-256, an admin key as the bearer credential. Answers are JSON nodes.
/// </summary>
internal sealed class AdminClient : IDisposable
{
    /// <summary>A full-access key and a read-only key every admin test relay is configured with.</summary>
    public const string FullKey = "admin-full-key-0123456789abcdefghijklmnop";

    public const string ReadKey = "admin-read-key-0123456789abcdefghijklmnop";

    private readonly HttpClient _http;

    public AdminClient(Uri baseUrl, string? certificateSha256, string? key = FullKey)
    {
        var handler = new SocketsHttpHandler
        {
            SslOptions = { RemoteCertificateValidationCallback = PinnedTo(certificateSha256) },
        };
        _http = new HttpClient(handler) { BaseAddress = baseUrl, Timeout = TimeSpan.FromSeconds(30) };
        if (key is not null)
        {
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }
    }

    /// <summary>A certificate check that accepts exactly the certificate whose SHA-256 is <paramref name="certificateSha256"/> (the relay's pin).</summary>
    public static System.Net.Security.RemoteCertificateValidationCallback PinnedTo(string? certificateSha256) => (_, certificate, _, _) =>
        certificate is not null && string.Equals(Convert.ToHexString(SHA256.HashData(certificate.GetRawCertData())), certificateSha256, StringComparison.OrdinalIgnoreCase);

    /// <summary>Adds the admin listener and the two keys to a relay's options.</summary>
    public static void Enable(RelayOptions options)
    {
        options.Admin.Listen = "127.0.0.1:0";
        options.Admin.Keys.Add(new AdminKeyOptions { Name = "ops", Key = FullKey, Scope = "full" });
        options.Admin.Keys.Add(new AdminKeyOptions { Name = "viewer", Key = ReadKey, Scope = "read" });
    }

    public HttpClient Http => _http;

    public async Task<(HttpStatusCode Status, JsonNode? Body, HttpResponseMessage Response)> SendAsync(HttpMethod method, string path, object? body = null, string? ifMatch = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body, options: new JsonSerializerOptions(JsonSerializerDefaults.Web));
        }

        if (ifMatch is not null)
        {
            request.Headers.TryAddWithoutValidation("If-Match", ifMatch);
        }

        var response = await _http.SendAsync(request).DefaultTimeout();
        var text = await response.Content.ReadAsStringAsync().DefaultTimeout();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text), response);
    }

    public Task<(HttpStatusCode Status, JsonNode? Body, HttpResponseMessage Response)> GetAsync(string path) => SendAsync(HttpMethod.Get, path);

    public Task<(HttpStatusCode Status, JsonNode? Body, HttpResponseMessage Response)> PostAsync(string path, object? body = null) => SendAsync(HttpMethod.Post, path, body ?? new { });

    /// <summary>A call that must succeed with <paramref name="expected"/>; fails the test with the problem otherwise.</summary>
    public async Task<JsonNode?> ExpectAsync(HttpStatusCode expected, HttpMethod method, string path, object? body = null, string? ifMatch = null)
    {
        var (status, json, _) = await SendAsync(method, path, body, ifMatch);
        Assert.That(status, Is.EqualTo(expected), $"{method} {path}: {json?.ToJsonString()}");
        return json;
    }

    public void Dispose() => _http.Dispose();
}
