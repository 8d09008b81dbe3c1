using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.ControlPlane.Store;

namespace SiteLink.Relay.Admin;

/// <summary>
/// The admin API's server: a Kestrel app of its own (apart from the agent port and the cloud endpoints) on
/// <see cref="AdminOptions.Listen"/>, HTTPS with the agent port's certificate, serving the REST API under <c>/v1</c>,
/// its OpenAPI document at <c>/openapi/v1.json</c> and the dashboard at <c>/dashboard</c>. Every <c>/v1</c> call is
/// authenticated and audited.
/// </summary>
internal sealed partial class AdminApi : IHostedService, IAsyncDisposable
{
    /// <summary>Largest request body the admin API reads.</summary>
    public const int MaxRequestBodySize = 64 * 1024;

    /// <summary>Audit entries waiting to be written; callers wait (briefly) when it is full, so none is lost.</summary>
    public const int AuditQueueCapacity = 10_000;

    private readonly IServiceProvider _relay;
    private readonly RelayOptions _options;
    private readonly X509Certificate2? _certificate;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly Channel<AuditEntry> _audit = Channel.CreateBounded<AuditEntry>(new BoundedChannelOptions(AuditQueueCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private WebApplication? _app;
    private Task _auditWriter = Task.CompletedTask;

    public AdminApi(IServiceProvider relay, RelayOptions options, Hosting.RelayStartupFacts facts, ILoggerFactory loggerFactory)
    {
        _relay = relay;
        _options = options;
        _certificate = facts.Certificate;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<AdminApi>();
    }

    /// <summary>The admin API's base URL once started (null when off).</summary>
    public Uri? Url { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_options.Admin.Listen is not { } listen)
        {
            return;
        }

        var controlPlane = _relay.GetRequiredService<ControlPlane.ControlPlane>();
        var endPoint = RelayOptionsValidator.ParseEndPoint(listen);
        var tls = !_options.Admin.DisableTls && _certificate is not null;
        // An empty builder: none of the process's configuration applies to this server but what is set here.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().UseKestrelHttpsConfiguration();
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        builder.Services.AddRouting();
        builder.Services.AddProblemDetails(problems => problems.CustomizeProblemDetails = AdminJson.TypeFrameworkProblems);
        builder.Services.Configure<JsonOptions>(json =>
        {
            var store = ControlPlane.StoreJson.Options;
            json.SerializerOptions.DefaultIgnoreCondition = store.DefaultIgnoreCondition;
            json.SerializerOptions.PreferredObjectCreationHandling = store.PreferredObjectCreationHandling;
            json.SerializerOptions.MaxDepth = store.MaxDepth;
            foreach (var converter in store.Converters)
            {
                json.SerializerOptions.Converters.Add(converter);
            }

            json.SerializerOptions.TypeInfoResolver = (json.SerializerOptions.TypeInfoResolver ?? new DefaultJsonTypeInfoResolver())
                .WithAddedModifier(AdminJson.RefuseNulls);
        });
        // A body or parameter that cannot be read throws (rather than a bare 400), so the answer says what was wrong.
        builder.Services.Configure<RouteHandlerOptions>(routes => routes.ThrowOnBadRequest = true);
        builder.Services.AddOpenApi("v1", openApi => openApi.AddDocumentTransformer((document, _, _) =>
        {
            document.Info = new Microsoft.OpenApi.OpenApiInfo
            {
                Title = "SiteLink relay admin API",
                Version = "v1",
                Description = "Tenants, authtokens, cloud endpoints, sessions, webhook subscriptions and the audit log of a SiteLink relay. "
                    + "Authenticate with Authorization: Bearer <admin key> (or a JWT from the vendor's identity provider, when configured). "
                    + "Errors are RFC 9457 problem details; updates and deletes take If-Match with the ETag a read returned.",
            };
            // The document is checked into the repository: nothing in it may depend on where this relay listens.
            document.Servers?.Clear();
            document.Components ??= new Microsoft.OpenApi.OpenApiComponents();
            document.Components.SecuritySchemes ??= new Dictionary<string, Microsoft.OpenApi.IOpenApiSecurityScheme>();
            document.Components.SecuritySchemes["bearer"] = new Microsoft.OpenApi.OpenApiSecurityScheme
            {
                Type = Microsoft.OpenApi.SecuritySchemeType.Http,
                Scheme = "bearer",
                Description = "An admin key, or a JWT whose scope grants sitelink.read or sitelink.admin.",
            };
            document.Security ??= [];
            document.Security.Add(new Microsoft.OpenApi.OpenApiSecurityRequirement { [new Microsoft.OpenApi.OpenApiSecuritySchemeReference("bearer", document)] = [] });
            return Task.CompletedTask;
        }));
        foreach (var service in AdminEndpoints.RelayServices)
        {
            builder.Services.AddSingleton(service, _relay.GetRequiredService(service));
        }

        builder.Services.AddSingleton(new AdminAuth(_options, controlPlane, _relay.GetRequiredService<TimeProvider>()));
        builder.Services.AddSingleton(_audit.Writer);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = MaxRequestBodySize;
            kestrel.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            kestrel.Limits.MaxConcurrentConnections = 1024;
            kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(60);
            kestrel.Listen(endPoint, listenOptions =>
            {
                listenOptions.Protocols = tls ? HttpProtocols.Http1AndHttp2 : HttpProtocols.Http1;
                if (tls)
                {
                    listenOptions.UseHttps(_certificate!);
                }
            });
        });

        var app = builder.Build();
        app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = AdminEndpoints.WriteFailureAsync });
        app.UseStatusCodePages();
        app.UseRouting();
        app.Use(AdminEndpoints.AuthenticateAndAuditAsync);
        app.MapOpenApi("/openapi/{documentName}.json");
        Dashboard.Map(app);
        AdminEndpoints.Map(app);
        _auditWriter = WriteAuditAsync(controlPlane.Store!);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        _app = app;
        var address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features
            .Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.First();
        var uri = new Uri(address);
        var host = uri.Host is "0.0.0.0" or "[::]" ? IPAddress.Loopback.ToString() : uri.Host;
        Url = new UriBuilder(tls ? Uri.UriSchemeHttps : Uri.UriSchemeHttp, host, uri.Port).Uri;
        LogListening(_logger, Url);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is { } app)
        {
            _app = null;
            await app.StopAsync(cancellationToken).ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
        }

        _audit.Writer.TryComplete();
        await _auditWriter.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync() => await StopAsync(CancellationToken.None).ConfigureAwait(false);

    /// <summary>Writes audit entries to the store in batches as they come; a store that fails is retried, entries kept meanwhile.</summary>
    private async Task WriteAuditAsync(ControlStore store)
    {
        var batch = new List<AuditEntry>();
        while (await _audit.Reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (batch.Count < 500 && _audit.Reader.TryRead(out var entry))
            {
                batch.Add(entry);
            }

            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await store.AppendAuditAsync(batch, CancellationToken.None).ConfigureAwait(false);
                    break;
                }
                catch (Exception ex) when (ex is System.Data.Common.DbException or InvalidOperationException or IOException or TimeoutException)
                {
                    LogAuditFailed(_logger, batch.Count, Internal.SafeText.Clean(ex.Message, 512));
                    if (attempt >= 5 || _app is null)
                    {
                        break;
                    }

                    await Task.Delay(TimeSpan.FromSeconds(attempt)).ConfigureAwait(false);
                }
            }

            batch.Clear();
        }
    }

    [LoggerMessage(EventId = 910, Level = LogLevel.Information, Message = "Admin API listening on {Url}")]
    private static partial void LogListening(ILogger logger, Uri url);

    [LoggerMessage(EventId = 912, Level = LogLevel.Error, Message = "The audit queue stayed full (the store does not take entries): not audited in the store: {Actor} {Action} {Target} -> {Status}")]
    internal static partial void LogAuditNotQueued(ILogger logger, string actor, string action, string target, int status);

    [LoggerMessage(EventId = 911, Level = LogLevel.Error, Message = "{Count} audit entries could not be written to the store: {Problem}")]
    private static partial void LogAuditFailed(ILogger logger, int count, string problem);
}
