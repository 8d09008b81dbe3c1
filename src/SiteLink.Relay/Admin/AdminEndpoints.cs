using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using SiteLink.Relay.CloudEndpoints;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.ControlPlane;
using SiteLink.Relay.ControlPlane.Store;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Admin;

/// <summary>
/// The admin API's routes (<c>/v1</c>): reads come from what this relay applied (no database round trip); writes go to
/// the store, are applied here before the answer, and reach the other replicas within their poll interval. Resources
/// from the configuration file are listed with <c>source: config</c> and cannot be changed here.
/// </summary>
internal static partial class AdminEndpoints
{
    private const int DefaultPageSize = 100;

    /// <summary>How long a call waits for room in the audit queue before its entry is logged instead.</summary>
    private static readonly TimeSpan AuditQueueWait = TimeSpan.FromSeconds(5);
    private const string CallerKey = "sitelink.admin.caller";
    private const string ProblemKey = "sitelink.admin.problem";
    private const string ProblemTypes = "urn:sitelink:problem:";

    /// <summary>The relay's services the admin app uses (shared with it, not copied).</summary>
    public static readonly Type[] RelayServices =
    [
        typeof(ControlPlane.ControlPlane), typeof(RelayOptions), typeof(SessionRegistry), typeof(CloudEndpointHost), typeof(RelayCounters),
        typeof(TokenSources), typeof(TimeProvider), typeof(Events.EventHub),
    ];

    /// <summary>Authenticates every <c>/v1</c> call, refuses writes to read-only callers, and audits the outcome.</summary>
    public static async Task AuthenticateAndAuditAsync(HttpContext context, RequestDelegate next)
    {
        if (!context.Request.Path.StartsWithSegments("/v1", StringComparison.Ordinal))
        {
            await next(context).ConfigureAwait(false);
            return;
        }

        var services = context.RequestServices;
        var auth = services.GetRequiredService<AdminAuth>();
        var address = context.Connection.RemoteIpAddress ?? IPAddress.None;
        if (auth.IsThrottled(address))
        {
            // Not checked, not audited: a client that keeps failing costs nothing more until its budget refills.
            context.Response.Headers.RetryAfter = "1";
            await WriteProblemAsync(context, StatusCodes.Status429TooManyRequests, "too-many-failures", "Too many failed authentications",
                "This address failed to authenticate too often; wait and try again with a valid admin key.").ConfigureAwait(false);
            return;
        }

        var (caller, problem) = await auth.AuthenticateAsync(context.Request.Headers.Authorization).ConfigureAwait(false);
        (int Status, string Problem)? failed = null;
        try
        {
            if (caller is null)
            {
                auth.OnFailure(address);
                context.Response.Headers.WWWAuthenticate = "Bearer realm=\"sitelink-admin\"";
                await WriteProblemAsync(context, StatusCodes.Status401Unauthorized, "unauthenticated", "Not authenticated", problem).ConfigureAwait(false);
                return;
            }

            context.Items[CallerKey] = caller;
            if (!caller.CanWrite && !HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
            {
                await WriteProblemAsync(context, StatusCodes.Status403Forbidden, "forbidden", "Read-only credentials",
                    "This admin key (or token scope) may read only; this call changes the relay.").ConfigureAwait(false);
                return;
            }

            await next(context).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // The exception handler answers it (WriteFailureAsync): audited as it will be answered, not as the 200 the
            // response still says here.
            var (status, _, title, detail) = AdminJson.Describe(ex);
            failed = (status, $"{title}: {Internal.SafeText.Clean(detail, MaxProblemDetail)}");
            throw;
        }
        finally
        {
            // The route (its template, e.g. /v1/tokens/{name}): what was done; the path says to what.
            var route = ((context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? context.Request.Path.Value ?? "").TrimEnd('/');
            var entry = new AuditEntry(0, services.GetRequiredService<TimeProvider>().GetUtcNow(), caller?.Actor ?? "anonymous",
                $"{context.Request.Method} {route}", Internal.SafeText.Clean(context.Request.Path.Value, 256), failed?.Status ?? context.Response.StatusCode,
                failed?.Problem ?? context.Items[ProblemKey] as string ?? (caller is null ? problem : ""));
            // Waits when the writer is behind (the queue is bounded), up to a deadline: a store that stays down must not
            // hang every admin call; an entry that cannot be queued in time is logged (as an error, without secrets).
            using var deadline = new CancellationTokenSource(AuditQueueWait);
            try
            {
                await services.GetRequiredService<ChannelWriter<AuditEntry>>().WriteAsync(entry, deadline.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException)
            {
                AdminApi.LogAuditNotQueued(services.GetRequiredService<Microsoft.Extensions.Logging.ILoggerFactory>().CreateLogger("SiteLink.Relay.Admin.AdminApi"),
                    entry.Actor, entry.Action, entry.Target, entry.Status);
            }
        }
    }

    /// <summary>
    /// The answer to a call that ended with an exception (the app's exception handler): a request that could not be read
    /// is a typed 400 (or 413) saying what was wrong; anything else a typed 500 that says nothing of the exception.
    /// </summary>
    public static Task WriteFailureAsync(HttpContext context)
    {
        var (status, type, title, detail) = AdminJson.Describe(context.Features.Get<Microsoft.AspNetCore.Diagnostics.IExceptionHandlerFeature>()?.Error);
        return WriteProblemAsync(context, status, type, title, detail);
    }

    public static void Map(WebApplication app)
    {
        var v1 = app.MapGroup("/v1");
        v1.MapGet("/status", Status).WithTags("relay").WithSummary("This relay at a glance");

        var tenants = v1.MapGroup("/tenants").WithTags("tenants");
        tenants.MapGet("", ListTenants).WithSummary("List tenants");
        tenants.MapPost("", CreateTenantAsync).WithSummary("Create a tenant");
        tenants.MapGet("/{id}", GetTenant).WithSummary("Get a tenant");
        tenants.MapDelete("/{id}", DeleteTenantAsync).WithSummary("Delete a tenant (it must have no tokens, endpoints or subscriptions)");

        var tokens = v1.MapGroup("/tokens").WithTags("tokens");
        tokens.MapGet("", ListTokens).WithSummary("List authtokens");
        tokens.MapPost("", CreateTokenAsync).WithSummary("Create an authtoken (its secret is returned this once)");
        tokens.MapGet("/{name}", GetToken).WithSummary("Get an authtoken");
        tokens.MapPut("/{name}", UpdateTokenAsync).WithSummary("Change an authtoken's allowed names or expiry");
        tokens.MapPost("/{name}/revoke", RevokeTokenAsync).WithSummary("Revoke an authtoken: its sessions end at once");
        tokens.MapDelete("/{name}", DeleteTokenAsync).WithSummary("Delete an authtoken: its sessions end at once");

        var keys = v1.MapGroup("/admin-keys").WithTags("admin keys");
        keys.MapGet("", ListAdminKeys).WithSummary("List admin keys");
        keys.MapPost("", CreateAdminKeyAsync).WithSummary("Create an admin key (its secret is returned this once)");
        keys.MapDelete("/{name}", DeleteAdminKeyAsync).WithSummary("Delete an admin key");

        var sessions = v1.MapGroup("/sessions").WithTags("sessions");
        sessions.MapGet("", ListSessions).WithSummary("List agent sessions connected to this relay");
        sessions.MapGet("/{id}", GetSession).WithSummary("Get a session");
        sessions.MapDelete("/{id}", KickSession).WithSummary("End a session (the agent may reconnect; revoke its token to keep it out)");

        v1.MapGet("/audit", ListAuditAsync).WithTags("audit").WithSummary("The audit log, newest first");
        MapEndpoints(v1);
        MapEvents(v1);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Relay

    private static Ok<RelayStatus> Status(RelayOptions options, SessionRegistry registry, RelayCounters counters, ControlPlane.ControlPlane controlPlane) =>
        TypedResults.Ok(new RelayStatus(
            options.RelayId,
            options.Region,
            typeof(AdminEndpoints).Assembly.GetName().Version?.ToString(3) ?? "",
            registry.SessionCount,
            controlPlane.Store?.Provider ?? "",
            controlPlane.State.Revision,
            new Dictionary<string, long>
            {
                ["connectionsAccepted"] = counters.ConnectionsAccepted,
                ["connectionsActive"] = counters.ActiveConnections,
                ["bytesFromClients"] = counters.BytesFromClients,
                ["bytesToClients"] = counters.BytesToClients,
                ["authenticationFailures"] = counters.AuthenticationFailures,
                ["protocolErrors"] = counters.ProtocolErrors,
                ["sessionsTimedOut"] = counters.SessionsTimedOut,
                ["connectionsRefusedNoAgent"] = counters.Refused(RefusalReason.NoAgent),
            }));

    // ---------------------------------------------------------------------------------------------------------------
    // Tenants

    private static IEnumerable<TenantInfo> AllTenants(ControlPlane.ControlPlane controlPlane, RelayOptions options)
    {
        var stored = controlPlane.State.Parsed<TenantBody>(ResourceKinds.Tenant)
            .Select(x => new TenantInfo(x.Resource.Name, x.Body.DisplayName, "api", x.Resource.CreatedAt, x.Resource.Version));
        var configured = options.Tokens.Select(t => t.Tenant).Concat(options.CloudEndpoints.Select(e => e.Tenant))
            .Select(t => t.ToLowerInvariant()).Distinct(StringComparer.Ordinal)
            .Where(t => !controlPlane.State.Of(ResourceKinds.Tenant).ContainsKey(t))
            .Select(t => new TenantInfo(t, t, "config", null, 0));
        return stored.Concat(configured);
    }

    private static bool TenantExists(ControlPlane.ControlPlane controlPlane, RelayOptions options, string tenant) =>
        AllTenants(controlPlane, options).Any(t => t.Id == tenant);

    /// <summary>
    /// Whether <paramref name="tenant"/> is one of the configuration file's (it cannot be deleted here). Resources of any
    /// other tenant are created only while the tenant is stored, checked in the store's transaction: this API's own check
    /// reads what was applied, and a delete running meanwhile would leave them to no tenant.
    /// </summary>
    private static bool IsConfiguredTenant(RelayOptions options, string tenant) =>
        options.Tokens.Any(t => string.Equals(t.Tenant, tenant, StringComparison.OrdinalIgnoreCase))
        || options.CloudEndpoints.Any(e => string.Equals(e.Tenant, tenant, StringComparison.OrdinalIgnoreCase));

    private static Ok<Page<TenantInfo>> ListTenants(ControlPlane.ControlPlane controlPlane, RelayOptions options, int? limit, string? cursor) =>
        TypedResults.Ok(Paginate(AllTenants(controlPlane, options), t => t.Id, limit, cursor));

    private static Results<Ok<TenantInfo>, ProblemHttpResult> GetTenant(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, string id) =>
        AllTenants(controlPlane, options).FirstOrDefault(t => t.Id == id) is { } tenant
            ? WithETag(context, tenant.Version, tenant)
            : NotFound(context, "tenant", id);

    private static async Task<Results<Created<TenantInfo>, ProblemHttpResult>> CreateTenantAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, TenantCreate request)
    {
        if (!ResourceNames.IsValidTenant(request.Id))
        {
            return Invalid(context, "id must be 1 to 63 lower-case letters, digits or '-', starting with a letter or digit.");
        }

        if (request.DisplayName is { Length: > 200 } || (request.DisplayName is not null && !Internal.SafeText.IsClean(request.DisplayName)))
        {
            return Invalid(context, "displayName must be at most 200 characters, without control characters.");
        }

        if (TenantExists(controlPlane, options, request.Id))
        {
            return Conflict(context, $"a tenant '{request.Id}' exists");
        }

        return await WriteAsync(context, controlPlane, async store =>
        {
            var created = await store.CreateAsync(ResourceKinds.Tenant, request.Id, request.Id, StoreJson.Write(new TenantBody(request.DisplayName ?? request.Id)), context.RequestAborted).ConfigureAwait(false);
            context.Response.Headers.ETag = ETag(created.Version);
            return TypedResults.Created($"/v1/tenants/{created.Name}", new TenantInfo(created.Name, request.DisplayName ?? request.Id, "api", created.CreatedAt, created.Version));
        }).ConfigureAwait(false);
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteTenantAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, string id)
    {
        if (AllTenants(controlPlane, options).FirstOrDefault(t => t.Id == id) is not { } tenant)
        {
            return NotFound(context, "tenant", id);
        }

        if (tenant.Source == "config")
        {
            return ReadOnly(context, "tenant", id);
        }

        var state = controlPlane.State;
        var inUse = new[] { ResourceKinds.Token, ResourceKinds.Endpoint, ResourceKinds.Subscription }
            .Sum(kind => state.Of(kind).Values.Count(r => r.Tenant == id));
        if (inUse > 0)
        {
            return Conflict(context, $"tenant '{id}' still has {inUse.ToString(CultureInfo.InvariantCulture)} tokens, endpoints or subscriptions: delete them first");
        }

        return await DeleteAsync(context, controlPlane, ResourceKinds.Tenant, id).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Tokens

    private const int MaxAllowPatterns = 32;

    private static IEnumerable<TokenInfo> AllTokens(ControlPlane.ControlPlane controlPlane, RelayOptions options, TimeProvider time)
    {
        var now = time.GetUtcNow();
        var configured = options.Tokens.Select(t => new TokenInfo(t.Name, t.Tenant.ToLowerInvariant(), [.. t.Allow], null, null, true, "config", null, 0));
        var configuredNames = new HashSet<string>(options.Tokens.Select(t => t.Name), StringComparer.OrdinalIgnoreCase);
        var stored = controlPlane.State.Parsed<TokenBody>(ResourceKinds.Token).Where(x => !configuredNames.Contains(x.Resource.Name)).Select(x => ToTokenInfo(x.Resource, x.Body, now));
        return configured.Concat(stored);
    }

    private static TokenInfo ToTokenInfo(StoredResource resource, DateTimeOffset now) =>
        ToTokenInfo(resource, StoreJson.Read<TokenBody>(resource.Body) ?? new TokenBody("", [], null, null), now);

    private static TokenInfo ToTokenInfo(StoredResource resource, TokenBody body, DateTimeOffset now)
    {
        return new TokenInfo(resource.Name, resource.Tenant, body.Allow, body.ExpiresAt, body.RevokedAt, body.IsActiveAt(now),
            "api", resource.CreatedAt, resource.Version);
    }

    private static Ok<Page<TokenInfo>> ListTokens(ControlPlane.ControlPlane controlPlane, RelayOptions options, TimeProvider time, string? tenant, int? limit, string? cursor) =>
        TypedResults.Ok(Paginate(AllTokens(controlPlane, options, time).Where(t => tenant is null || t.Tenant == tenant), t => t.Name, limit, cursor));

    private static Results<Ok<TokenInfo>, ProblemHttpResult> GetToken(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, TimeProvider time, string name) =>
        AllTokens(controlPlane, options, time).FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase)) is { } token
            ? WithETag(context, token.Version, token)
            : NotFound(context, "token", name);

    private static string? CheckAllow(IReadOnlyList<string>? allow, DateTimeOffset? expiresAt, DateTimeOffset now)
    {
        if (allow is not { Count: > 0 and <= MaxAllowPatterns } || allow.Any(p => p is not { Length: <= 128 } || !EndpointAcl.IsValidPattern(p)))
        {
            return $"allow must list 1 to {MaxAllowPatterns.ToString(CultureInfo.InvariantCulture)} patterns of endpoint names (letters, digits, '-', '_', '.', '*', '?'; at most 128 characters each).";
        }

        return expiresAt is { } expires && expires <= now ? "expiresAt is in the past." : null;
    }

    private static async Task<Results<Created<TokenCreated>, ProblemHttpResult>> CreateTokenAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, TimeProvider time, TokenCreate request)
    {
        var now = time.GetUtcNow();
        if (!ResourceNames.IsValid(request.Name))
        {
            return Invalid(context, "name must be 1 to 64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit.");
        }

        if (CheckAllow(request.Allow, request.ExpiresAt, now) is { } problem)
        {
            return Invalid(context, problem);
        }

        if (!TenantExists(controlPlane, options, request.Tenant))
        {
            return Invalid(context, $"tenant '{Internal.SafeText.Clean(request.Tenant, 64)}' does not exist; create it first (POST /v1/tenants).");
        }

        if (AllTokens(controlPlane, options, time).Any(t => string.Equals(t.Name, request.Name, StringComparison.OrdinalIgnoreCase)))
        {
            return Conflict(context, $"a token '{request.Name}' exists");
        }

        var secret = NewSecret("sl_");
        return await WriteAsync(context, controlPlane, async store =>
        {
            var created = await store.CreateAsync(ResourceKinds.Token, request.Name, request.Tenant,
                StoreJson.Write(new TokenBody(AuthTokenStore.HashToHex(secret), [.. request.Allow], request.ExpiresAt, null)), context.RequestAborted,
                requireTenant: !IsConfiguredTenant(options, request.Tenant)).ConfigureAwait(false);
            context.Response.Headers.ETag = ETag(created.Version);
            return TypedResults.Created($"/v1/tokens/{created.Name}", new TokenCreated(ToTokenInfo(created, now), secret));
        }).ConfigureAwait(false);
    }

    private static async Task<Results<Ok<TokenInfo>, ProblemHttpResult>> UpdateTokenAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, TokenSources sources, TimeProvider time, string name, TokenUpdate request)
    {
        if (sources.IsConfigured(name))
        {
            return ReadOnly(context, "token", name);
        }

        if (CheckAllow(request.Allow, request.ExpiresAt, time.GetUtcNow()) is { } problem)
        {
            return Invalid(context, problem);
        }

        return await ChangeAsync<TokenBody, TokenInfo>(context, controlPlane, ResourceKinds.Token, name,
            body => body with { Allow = [.. request.Allow], ExpiresAt = request.ExpiresAt }, r => ToTokenInfo(r, time.GetUtcNow())).ConfigureAwait(false);
    }

    private static async Task<Results<Ok<TokenInfo>, ProblemHttpResult>> RevokeTokenAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, TokenSources sources, TimeProvider time, string name)
    {
        if (sources.IsConfigured(name))
        {
            return ReadOnly(context, "token", name);
        }

        return await ChangeAsync<TokenBody, TokenInfo>(context, controlPlane, ResourceKinds.Token, name,
            body => body with { RevokedAt = body.RevokedAt ?? time.GetUtcNow() }, r => ToTokenInfo(r, time.GetUtcNow())).ConfigureAwait(false);
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteTokenAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, TokenSources sources, string name) =>
        sources.IsConfigured(name) ? ReadOnly(context, "token", name) : await DeleteAsync(context, controlPlane, ResourceKinds.Token, name).ConfigureAwait(false);

    // ---------------------------------------------------------------------------------------------------------------
    // Admin keys

    private static IEnumerable<AdminKeyInfo> AllAdminKeys(ControlPlane.ControlPlane controlPlane, RelayOptions options) =>
        options.Admin.Keys.Select(k => new AdminKeyInfo(k.Name, k.Scope, "config", null, 0))
            .Concat(controlPlane.State.Parsed<AdminKeyBody>(ResourceKinds.AdminKey)
                .Select(x => new AdminKeyInfo(x.Resource.Name, x.Body.Scope, "api", x.Resource.CreatedAt, x.Resource.Version)));

    private static Ok<Page<AdminKeyInfo>> ListAdminKeys(ControlPlane.ControlPlane controlPlane, RelayOptions options, int? limit, string? cursor) =>
        TypedResults.Ok(Paginate(AllAdminKeys(controlPlane, options), k => k.Name, limit, cursor));

    private static async Task<Results<Created<AdminKeyCreated>, ProblemHttpResult>> CreateAdminKeyAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, AdminKeyCreate request)
    {
        if (!ResourceNames.IsValid(request.Name))
        {
            return Invalid(context, "name must be 1 to 64 lower-case letters, digits, '-', '_' or '.'.");
        }

        if (request.Scope is not ("read" or "full"))
        {
            return Invalid(context, "scope must be 'read' or 'full'.");
        }

        if (AllAdminKeys(controlPlane, options).Any(k => k.Name == request.Name))
        {
            return Conflict(context, $"an admin key '{request.Name}' exists");
        }

        var secret = NewSecret("sla_");
        return await WriteAsync(context, controlPlane, async store =>
        {
            var created = await store.CreateAsync(ResourceKinds.AdminKey, request.Name, "", StoreJson.Write(new AdminKeyBody(AuthTokenStore.HashToHex(secret), request.Scope)), context.RequestAborted).ConfigureAwait(false);
            return TypedResults.Created($"/v1/admin-keys/{created.Name}", new AdminKeyCreated(new AdminKeyInfo(created.Name, request.Scope, "api", created.CreatedAt, created.Version), secret));
        }).ConfigureAwait(false);
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAdminKeyAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, string name) =>
        options.Admin.Keys.Any(k => k.Name == name) ? ReadOnly(context, "admin key", name) : await DeleteAsync(context, controlPlane, ResourceKinds.AdminKey, name).ConfigureAwait(false);

    // ---------------------------------------------------------------------------------------------------------------
    // Sessions

    private static SessionInfo ToSessionInfo(AgentSession session, SessionRegistry registry, string relayId) => new(
        session.Id,
        session.Token.Tenant,
        session.Token.Name,
        session.ClientId,
        session.SdkVersion,
        session.Metadata,
        relayId,
        // gRPC names peers "ipv4:127.0.0.1:5000" / "ipv6:[::1]:5000": the address is what operators read.
        session.Peer.StartsWith("ipv4:", StringComparison.Ordinal) || session.Peer.StartsWith("ipv6:", StringComparison.Ordinal) ? session.Peer[5..] : session.Peer,
        session.RoundTrip() is { } rtt ? Math.Round(rtt.TotalMilliseconds, 3) : null,
        session.StartedAt,
        session.ActiveStreams,
        [.. registry.BindsOf(session).Select(b => new SessionBind(b.Name, b.Description.Length == 0 ? null : b.Description, b.Metadata))]);

    private static Ok<Page<SessionInfo>> ListSessions(SessionRegistry registry, RelayOptions options, string? tenant, int? limit, string? cursor) =>
        TypedResults.Ok(Paginate(registry.Sessions.Where(s => tenant is null || s.Token.Tenant == tenant).Select(s => ToSessionInfo(s, registry, options.RelayId)), s => s.Id, limit, cursor));

    private static Results<Ok<SessionInfo>, ProblemHttpResult> GetSession(HttpContext context, SessionRegistry registry, RelayOptions options, string id) =>
        registry.TryGetSession(id, out var session) ? TypedResults.Ok(ToSessionInfo(session, registry, options.RelayId)) : NotFound(context, "session", id);

    private static Results<NoContent, ProblemHttpResult> KickSession(HttpContext context, SessionRegistry registry, string id)
    {
        if (!registry.TryGetSession(id, out var session))
        {
            return NotFound(context, "session", id);
        }

        session.End(SessionEnd.Kicked);
        return TypedResults.NoContent();
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Audit

    private static async Task<Results<Ok<Page<AuditInfo>>, ProblemHttpResult>> ListAuditAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, int? limit, string? cursor)
    {
        if (!TryBefore(cursor, out var before))
        {
            return Invalid(context, "cursor is not one this API returned.");
        }

        var page = await controlPlane.Store!.ListAuditAsync(before, limit ?? DefaultPageSize, context.RequestAborted).ConfigureAwait(false);
        return TypedResults.Ok(new Page<AuditInfo>([.. page.Items.Select(e => new AuditInfo(e.Id, e.At, e.Actor, e.Action, e.Target, e.Status, e.Detail))], page.Next));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Helpers

    /// <summary>A page of <paramref name="items"/> in key order, after <paramref name="cursor"/> (the last key of the previous page).</summary>
    private static Page<T> Paginate<T>(IEnumerable<T> items, Func<T, string> key, int? limit, string? cursor)
    {
        var size = Math.Clamp(limit ?? DefaultPageSize, 1, ControlStore.MaxPageSize);
        var ordered = items.Where(i => cursor is null || string.CompareOrdinal(key(i), cursor) > 0).OrderBy(key, StringComparer.Ordinal).Take(size + 1).ToList();
        return ordered.Count > size ? new Page<T>(ordered[..size], key(ordered[size - 1])) : new Page<T>(ordered, null);
    }

    /// <summary>
    /// The entry id a newest-first listing's <paramref name="cursor"/> names (the audit log, dead letters); null without
    /// one; false when it is not one this API returned.
    /// </summary>
    private static bool TryBefore(string? cursor, out long? before)
    {
        before = null;
        if (cursor is null)
        {
            return true;
        }

        if (!long.TryParse(cursor, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed))
        {
            return false;
        }

        before = parsed;
        return true;
    }

    private static string NewSecret(string prefix) => prefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static string ETag(long version) => $"\"{version.ToString(CultureInfo.InvariantCulture)}\"";

    private static Ok<T> WithETag<T>(HttpContext context, long version, T value)
    {
        context.Response.Headers.ETag = ETag(version);
        return TypedResults.Ok(value);
    }

    /// <summary>The version an <c>If-Match</c> header names: null when absent or <c>*</c>; false when malformed.</summary>
    private static bool TryIfMatch(HttpContext context, out long? version)
    {
        version = null;
        var header = context.Request.Headers.IfMatch.ToString().Trim();
        if (header.Length == 0 || header == "*")
        {
            return true;
        }

        var value = header.StartsWith("W/", StringComparison.Ordinal) ? header[2..] : header;
        if (value.Length > 2 && value[0] == '"' && value[^1] == '"' && long.TryParse(value[1..^1], NumberStyles.None, CultureInfo.InvariantCulture, out var parsed))
        {
            version = parsed;
            return true;
        }

        return false;
    }

    /// <summary>Runs a write against the store and applies the result here before answering; store errors become problems.</summary>
    private static async Task<Results<T, ProblemHttpResult>> WriteAsync<T>(HttpContext context, ControlPlane.ControlPlane controlPlane, Func<ControlStore, Task<T>> write)
        where T : IResult
    {
        try
        {
            var result = await write(controlPlane.Store!).ConfigureAwait(false);
            await controlPlane.ApplyOwnWritesAsync(CancellationToken.None).ConfigureAwait(false);
            return result;
        }
        catch (StoreConflictException ex)
        {
            return Conflict(context, ex.Message);
        }
        catch (StoreNotFoundException ex)
        {
            return Problem(context, StatusCodes.Status404NotFound, "not-found", "Not found", ex.Message);
        }
        catch (StorePreconditionException ex)
        {
            context.Response.Headers.ETag = ETag(ex.Current);
            return Problem(context, StatusCodes.Status412PreconditionFailed, "precondition-failed", "Changed since read",
                $"{ex.Message}; read it again and retry with If-Match: {ETag(ex.Current)}");
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException or TimeoutException)
        {
            context.Response.Headers.RetryAfter = "1";
            return Problem(context, StatusCodes.Status503ServiceUnavailable, "store-unavailable", "Store unavailable",
                $"the relay's store did not accept the change ({Internal.SafeText.Clean(ex.Message, 256)}); nothing was changed, try again");
        }
    }

    /// <summary>Reads a stored resource's body, changes it and writes it back (with the caller's If-Match, if any).</summary>
    private static async Task<Results<Ok<TInfo>, ProblemHttpResult>> ChangeAsync<TBody, TInfo>(HttpContext context, ControlPlane.ControlPlane controlPlane, string kind, string name,
        Func<TBody, TBody> change, Func<StoredResource, TInfo> describe)
        where TBody : class
    {
        if (!TryIfMatch(context, out var expected))
        {
            return Invalid(context, "If-Match must be an ETag this API returned, e.g. \"42\".");
        }

        if (!controlPlane.State.Of(kind).TryGetValue(name, out var current) || StoreJson.Read<TBody>(current.Body) is not { } body)
        {
            return NotFound(context, kind, name);
        }

        var written = await WriteAsync(context, controlPlane, async store =>
        {
            var updated = await store.UpdateAsync(kind, current.Name, StoreJson.Write(change(body)), expected ?? current.Version, context.RequestAborted).ConfigureAwait(false);
            context.Response.Headers.ETag = ETag(updated.Version);
            return TypedResults.Ok(describe(updated));
        }).ConfigureAwait(false);
        return written.Result is Ok<TInfo> ok ? ok : (ProblemHttpResult)written.Result;
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, string kind, string name)
    {
        if (!TryIfMatch(context, out var expected))
        {
            return Invalid(context, "If-Match must be an ETag this API returned, e.g. \"42\".");
        }

        if (!controlPlane.State.Of(kind).TryGetValue(name, out var current))
        {
            return NotFound(context, kind, name);
        }

        return await WriteAsync(context, controlPlane, async store =>
        {
            // A tenant: only while nothing belongs to it, checked where no concurrent create can slip in between.
            await store.DeleteAsync(kind, current.Name, expected, context.RequestAborted, unlessOwning: kind == ResourceKinds.Tenant).ConfigureAwait(false);
            return TypedResults.NoContent();
        }).ConfigureAwait(false);
    }

    /// <summary>The longest problem detail answered and audited: details quote what callers sent.</summary>
    private const int MaxProblemDetail = 1024;

    private static ProblemHttpResult Problem(HttpContext context, int status, string type, string title, string detail)
    {
        // Details quote the caller's input (an address, a protocol, a name): capped and cleaned of control and
        // formatting characters here, once, for the answer and the audit log alike.
        detail = Internal.SafeText.Clean(detail, MaxProblemDetail);
        context.Items[ProblemKey] = $"{title}: {detail}";
        return TypedResults.Problem(detail: detail, statusCode: status, title: title, type: ProblemTypes + type);
    }

    private static Task WriteProblemAsync(HttpContext context, int status, string type, string title, string detail)
    {
        context.Items[ProblemKey] = $"{title}: {detail}";
        return Problem(context, status, type, title, detail).ExecuteAsync(context);
    }

    private static ProblemHttpResult NotFound(HttpContext context, string kind, string name) =>
        Problem(context, StatusCodes.Status404NotFound, "not-found", "Not found", $"no {kind} '{Internal.SafeText.Clean(name, 64)}'");

    private static ProblemHttpResult Invalid(HttpContext context, string detail) =>
        Problem(context, StatusCodes.Status422UnprocessableEntity, "invalid", "Invalid request", detail);

    private static ProblemHttpResult Conflict(HttpContext context, string detail) =>
        Problem(context, StatusCodes.Status409Conflict, "conflict", "Conflict", detail);

    private static ProblemHttpResult ReadOnly(HttpContext context, string kind, string name) =>
        Problem(context, StatusCodes.Status409Conflict, "read-only", "Configured in the relay's file",
            $"{kind} '{Internal.SafeText.Clean(name, 64)}' comes from the relay's configuration file; change it there");
}
