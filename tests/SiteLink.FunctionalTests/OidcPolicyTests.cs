using System.Net;
using System.Net.Sockets;
using System.Security.Claims;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenIddict.Abstractions;
using OpenIddict.Server;
using OpenIddict.Server.AspNetCore;
using SiteLink.FunctionalTests.Infrastructure;
using SiteLink.Relay.Configuration;
using static OpenIddict.Abstractions.OpenIddictConstants;

namespace SiteLink.FunctionalTests;

/// <summary>C13: OpenID Connect login on an http cloud endpoint, against a real provider (OpenIddict's server on Kestrel).</summary>
[TestFixture]
[Category("TrafficPolicy")]
public sealed class OidcPolicyTests
{
    private const string ClientId = "sitelink-relay";
    private const string ClientSecret = "relay-client-secret-0123456789";

    /// <summary>An OpenID Connect provider on 127.0.0.1 that signs in whoever <see cref="User"/> names, without asking.</summary>
    private sealed class Provider : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private Provider(WebApplication app) => _app = app;

        public Uri Url { get; private set; } = null!;

        public string User { get; set; } = "alice@acme.example";

        public int Logins;

        public static async Task<Provider> StartAsync()
        {
            var builder = WebApplication.CreateBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
            builder.Services.AddOpenIddict().AddServer(options =>
            {
                options.SetAuthorizationEndpointUris("connect/authorize").SetTokenEndpointUris("connect/token");
                options.AllowAuthorizationCodeFlow().RequireProofKeyForCodeExchange();
                options.RegisterScopes(Scopes.Email);
                options.AddEphemeralEncryptionKey().AddEphemeralSigningKey();
                options.DisableAccessTokenEncryption();
                // No client store: the provider checks its one client itself.
                options.EnableDegradedMode();
                options.UseAspNetCore().EnableAuthorizationEndpointPassthrough().DisableTransportSecurityRequirement();
                options.AddEventHandler<OpenIddictServerEvents.ValidateAuthorizationRequestContext>(handler => handler.UseInlineHandler(context =>
                {
                    if (context.ClientId != ClientId || context.RedirectUri?.Contains("/.sitelink/oidc/", StringComparison.Ordinal) != true)
                    {
                        context.Reject(Errors.InvalidClient, "unknown client or redirect URI");
                    }

                    return default;
                }));
                options.AddEventHandler<OpenIddictServerEvents.ValidateTokenRequestContext>(handler => handler.UseInlineHandler(context =>
                {
                    if (context.ClientId != ClientId || context.ClientSecret != ClientSecret)
                    {
                        context.Reject(Errors.InvalidClient, "bad client credentials");
                    }

                    return default;
                }));
            });
            var app = builder.Build();
            var provider = new Provider(app);
            app.MapGet("/connect/authorize", () =>
            {
                Interlocked.Increment(ref provider.Logins);
                var identity = new ClaimsIdentity(OpenIddictServerAspNetCoreDefaults.AuthenticationScheme, Claims.Name, Claims.Role);
                identity.AddClaim(new Claim(Claims.Subject, "id-" + provider.User).SetDestinations(Destinations.AccessToken, Destinations.IdentityToken));
                identity.AddClaim(new Claim(Claims.Email, provider.User).SetDestinations(Destinations.IdentityToken));
                var principal = new ClaimsPrincipal(identity);
                principal.SetScopes(Scopes.OpenId, Scopes.Email);
                return Results.SignIn(principal, authenticationScheme: OpenIddictServerAspNetCoreDefaults.AuthenticationScheme);
            });
            provider.Url = await app.StartAndGetAddressAsync();
            return provider;
        }

        public ValueTask DisposeAsync() => _app.DisposeAsync();
    }

    /// <summary>A browser: follows redirects, keeps cookies; *.relay.test goes to the relay, anything else where it says.</summary>
    private static HttpClient Browser(IPEndPoint relay, CookieContainer cookies) => new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = true,
        CookieContainer = cookies,
        ConnectCallback = async (context, ct) =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            var host = context.DnsEndPoint.Host;
            await socket.ConnectAsync(host.EndsWith(".relay.test", StringComparison.Ordinal) ? relay : new IPEndPoint(IPAddress.Parse(host), context.DnsEndPoint.Port), ct);
            return new NetworkStream(socket, ownsSocket: true);
        },
    }) { Timeout = TimeSpan.FromSeconds(30) };

    [Test]
    public async Task ABrowserIsSentToLogIn_ComesBackWithASession_OnlyAllowedEmailsGetThrough()
    {
        await using var provider = await Provider.StartAsync();
        await using var relay = await TestRelay.StartAsync([], o =>
        {
            var endpoint = new CloudEndpointOptions { Name = "app", Protocol = "http", Listen = "127.0.0.1:0", Tenant = "acme", Endpoint = "app", KeepAliveTimeout = TimeSpan.FromSeconds(1) };
            endpoint.Hostnames.Add("app.relay.test");
            var login = new PolicyRuleOptions { Type = "oidc", Authority = provider.Url.ToString(), ClientId = ClientId, ClientSecret = ClientSecret };
            login.AllowedDomains.Add("acme.example");
            endpoint.Policy.OnHttpRequest.Add(login);
            var header = new PolicyRuleOptions { Type = "add-headers" };
            header.Headers["X-Authenticated-User"] = "${auth.user}";
            endpoint.Policy.OnHttpRequest.Add(header);
            o.CloudEndpoints.Add(endpoint);
        });
        await using var web = await WebUpstream.StartAsync("app");
        await (await relay.ConnectAgentAsync()).ForwardAsync("app", web.Uri).DefaultTimeout();
        var target = relay.CloudEndpoint("app");
        var url = $"http://app.relay.test:{target.Port}/all-headers";

        var aliceCookies = new CookieContainer();
        using var alice = Browser(target, aliceCookies);
        using var first = await alice.GetAsync(url).DefaultTimeout();
        var firstBody = await first.Content.ReadAsStringAsync();
        using var second = await alice.GetAsync(url).DefaultTimeout();

        provider.User = "mallory@evil.example";
        using var mallory = Browser(target, new CookieContainer());
        using var refused = await mallory.GetAsync(url).DefaultTimeout();

        using var anonymous = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(target, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        });
        using var redirect = await anonymous.GetAsync(url).DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(first.StatusCode, Is.EqualTo(HttpStatusCode.OK), firstBody);
            Assert.That(firstBody, Does.Contain("X-Authenticated-User: alice@acme.example\n"), "who logged in, passed on");
            Assert.That(second.StatusCode, Is.EqualTo(HttpStatusCode.OK));
            Assert.That(provider.Logins, Is.EqualTo(2), "alice logged in once (her session cookie served the second request); mallory once");
            Assert.That(refused.StatusCode, Is.EqualTo(HttpStatusCode.Forbidden), "an email outside the allowed domains");
            Assert.That(redirect.StatusCode, Is.EqualTo(HttpStatusCode.Redirect));
            Assert.That(redirect.Headers.Location?.ToString(), Does.StartWith(provider.Url + "connect/authorize?client_id=" + ClientId));
            Assert.That(web.Connections, Is.EqualTo(1), "only alice's requests reached the service (on one kept-alive connection)");
        });
    }
}
