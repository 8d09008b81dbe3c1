using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Builder;
using SiteLink.Relay.CloudEndpoints;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.ControlPlane;
using SiteLink.Relay.ControlPlane.Store;
using SiteLink.Relay.Events;

namespace SiteLink.Relay.Admin;

/// <summary>Cloud endpoints, connections, webhook subscriptions, dead letters and recent events.</summary>
internal static partial class AdminEndpoints
{
    private static void MapEndpoints(RouteGroupBuilder v1)
    {
        var endpoints = v1.MapGroup("/endpoints").WithTags("endpoints");
        endpoints.MapGet("", ListEndpoints).WithSummary("List cloud endpoints and their state on this relay");
        endpoints.MapPost("", CreateEndpointAsync).WithSummary("Create a cloud endpoint: it listens (or its host names route) at once, on every replica");
        endpoints.MapGet("/{name}", GetEndpoint).WithSummary("Get a cloud endpoint");
        endpoints.MapPut("/{name}", UpdateEndpointAsync).WithSummary("Replace a cloud endpoint's settings (other endpoints and its established connections are unaffected)");
        endpoints.MapDelete("/{name}", DeleteEndpointAsync).WithSummary("Delete a cloud endpoint: it stops accepting; established connections finish");
        v1.MapGet("/connections", ListConnections).WithTags("endpoints").WithSummary("Public connections each cloud endpoint carries on this relay now");
    }

    private static void MapEvents(RouteGroupBuilder v1)
    {
        var subscriptions = v1.MapGroup("/subscriptions").WithTags("events");
        subscriptions.MapGet("", ListSubscriptions).WithSummary("List webhook subscriptions");
        subscriptions.MapPost("", CreateSubscriptionAsync).WithSummary("Subscribe a URL to a tenant's events (the signing secret is returned this once)");
        subscriptions.MapGet("/{id}", GetSubscription).WithSummary("Get a subscription");
        subscriptions.MapDelete("/{id}", DeleteSubscriptionAsync).WithSummary("Delete a subscription (what it still had queued is dead-lettered)");
        subscriptions.MapGet("/{id}/dead-letters", ListDeadLettersOfAsync).WithSummary("Events that could not be delivered to this subscription, newest first");
        v1.MapGet("/dead-letters", ListDeadLettersAsync).WithTags("events").WithSummary("Events that could not be delivered, newest first");
        v1.MapGet("/events", RecentEvents).WithTags("events").WithSummary("Recent events on this relay (the last 1,000), newest first");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Cloud endpoints

    private static IEnumerable<EndpointInfo> AllEndpoints(ControlPlane.ControlPlane controlPlane, RelayOptions options, CloudEndpointHost host, bool readOnly = false)
    {
        var bound = host.BoundEndpoints;
        var active = host.ActiveConnections;
        EndpointInfo Describe(EndpointSpec spec, string source, DateTimeOffset? createdAt, long version) => new(
            spec.WithoutSecrets(readOnly), source, bound.TryGetValue(spec.Name, out var address) ? address.ToString() : null, active.GetValueOrDefault(spec.Name),
            controlPlane.EndpointProblems.GetValueOrDefault(spec.Name), createdAt, version);

        var configured = new HashSet<string>(options.CloudEndpoints.Select(e => e.Name), StringComparer.OrdinalIgnoreCase);
        return options.CloudEndpoints.Select(e => Describe(EndpointSpec.From(e), "config", null, 0))
            .Concat(controlPlane.State.Parsed<EndpointSpec>(ResourceKinds.Endpoint)
                .Where(x => !configured.Contains(x.Resource.Name))
                .Select(x => Describe(x.Body, "api", x.Resource.CreatedAt, x.Resource.Version)));
    }

    private static Ok<Page<EndpointInfo>> ListEndpoints(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, CloudEndpointHost host, string? tenant, int? limit, string? cursor) =>
        TypedResults.Ok(Paginate(AllEndpoints(controlPlane, options, host, IsReadOnly(context)).Where(e => tenant is null || e.Spec.Tenant == tenant), e => e.Spec.Name, limit, cursor));

    private static Results<Ok<EndpointInfo>, ProblemHttpResult> GetEndpoint(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, CloudEndpointHost host, string name) =>
        AllEndpoints(controlPlane, options, host, IsReadOnly(context)).FirstOrDefault(e => string.Equals(e.Spec.Name, name, StringComparison.OrdinalIgnoreCase)) is { } endpoint
            ? WithETag(context, endpoint.Version, endpoint)
            : NotFound(context, "endpoint", name);

    /// <summary>Whether the caller may only read (so it is shown no secret it could not write back anyway).</summary>
    private static bool IsReadOnly(HttpContext context) => context.Items[CallerKey] is not AdminCaller { CanWrite: true };

    /// <summary>Why <paramref name="spec"/> cannot be a cloud endpoint beside every other (configured or stored, but <paramref name="replacing"/>); null when it can.</summary>
    private static string? CheckEndpoint(ControlPlane.ControlPlane controlPlane, RelayOptions options, EndpointSpec spec, string? replacing)
    {
        if (!ResourceNames.IsValid(spec.Name))
        {
            return "name must be 1 to 64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit.";
        }

        if (!TenantExists(controlPlane, options, spec.Tenant))
        {
            return $"tenant '{Internal.SafeText.Clean(spec.Tenant, 64)}' does not exist; create it first (POST /v1/tenants).";
        }

        if (spec.Hostnames is { Count: > 32 })
        {
            return "hostnames: at most 32.";
        }

        var others = options.CloudEndpoints.Concat(controlPlane.State.Of(ResourceKinds.Endpoint).Values
            .Where(r => !string.Equals(r.Name, replacing, StringComparison.OrdinalIgnoreCase))
            .Select(r => AppliedState.BodyOf<EndpointSpec>(r)?.ToOptions())
            .OfType<CloudEndpointOptions>());
        var errors = new List<string>();
        RelayOptionsValidator.ValidateRuntimeEndpoint(spec.ToOptions(), others, errors);
        return errors.Count == 0 ? null : string.Join(" ", errors);
    }

    /// <summary>Writes an endpoint and applies it; when it cannot start on this relay, the write is undone and the caller told why.</summary>
    private static async Task<Results<T, ProblemHttpResult>> ApplyEndpointAsync<T>(HttpContext context, ControlPlane.ControlPlane controlPlane, string name,
        Func<ControlStore, Task<T>> write, Func<ControlStore, Task> undo)
        where T : IResult
    {
        var written = await WriteAsync(context, controlPlane, write).ConfigureAwait(false);
        if (written.Result is not ProblemHttpResult && controlPlane.EndpointProblems.TryGetValue(name, out var problem))
        {
            await undo(controlPlane.Store!).ConfigureAwait(false);
            await controlPlane.ApplyOwnWritesAsync(CancellationToken.None).ConfigureAwait(false);
            return Problem(context, StatusCodes.Status422UnprocessableEntity, "cannot-start", "The endpoint cannot start", $"{problem}; nothing was changed");
        }

        return written;
    }

    private static async Task<Results<Created<EndpointInfo>, ProblemHttpResult>> CreateEndpointAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, CloudEndpointHost host, EndpointSpec request)
    {
        if (CheckEndpoint(controlPlane, options, request, replacing: null) is { } problem)
        {
            return Invalid(context, problem);
        }

        if (AllEndpoints(controlPlane, options, host).Any(e => string.Equals(e.Spec.Name, request.Name, StringComparison.OrdinalIgnoreCase)))
        {
            return Conflict(context, $"an endpoint '{request.Name}' exists");
        }

        var result = await ApplyEndpointAsync(context, controlPlane, request.Name,
            async store =>
            {
                var created = await store.CreateAsync(ResourceKinds.Endpoint, request.Name, request.Tenant, StoreJson.Write(request), context.RequestAborted,
                    requireTenant: !IsConfiguredTenant(options, request.Tenant)).ConfigureAwait(false);
                context.Response.Headers.ETag = ETag(created.Version);
                return TypedResults.Created($"/v1/endpoints/{created.Name}", (EndpointInfo?)null);
            },
            store => store.DeleteAsync(ResourceKinds.Endpoint, request.Name, null, CancellationToken.None)).ConfigureAwait(false);
        return result.Result is ProblemHttpResult failed
            ? failed
            : TypedResults.Created($"/v1/endpoints/{request.Name}", AllEndpoints(controlPlane, options, host).First(e => e.Spec.Name == request.Name));
    }

    private static async Task<Results<Ok<EndpointInfo>, ProblemHttpResult>> UpdateEndpointAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, CloudEndpointHost host, string name, EndpointSpec request)
    {
        if (options.CloudEndpoints.Any(e => string.Equals(e.Name, name, StringComparison.OrdinalIgnoreCase)))
        {
            return ReadOnly(context, "endpoint", name);
        }

        if (!string.Equals(request.Name, name, StringComparison.Ordinal))
        {
            return Invalid(context, "name in the body must be the endpoint's name (an endpoint cannot be renamed; create another).");
        }

        if (!TryIfMatch(context, out var expected))
        {
            return Invalid(context, "If-Match must be an ETag this API returned, e.g. \"42\".");
        }

        if (!controlPlane.State.Of(ResourceKinds.Endpoint).TryGetValue(name, out var current))
        {
            return NotFound(context, "endpoint", name);
        }

        if (!string.Equals(request.Tenant, current.Tenant, StringComparison.Ordinal))
        {
            return Invalid(context, "tenant cannot change (delete the endpoint and create it for the other tenant).");
        }

        if (CheckEndpoint(controlPlane, options, request, replacing: name) is { } problem)
        {
            return Invalid(context, problem);
        }

        var result = await ApplyEndpointAsync(context, controlPlane, name,
            async store =>
            {
                var updated = await store.UpdateAsync(ResourceKinds.Endpoint, current.Name, StoreJson.Write(request), expected ?? current.Version, context.RequestAborted).ConfigureAwait(false);
                context.Response.Headers.ETag = ETag(updated.Version);
                return TypedResults.Ok((EndpointInfo?)null);
            },
            store => store.UpdateAsync(ResourceKinds.Endpoint, current.Name, current.Body, null, CancellationToken.None)).ConfigureAwait(false);
        return result.Result is ProblemHttpResult failed ? failed : TypedResults.Ok(AllEndpoints(controlPlane, options, host).First(e => e.Spec.Name == name));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteEndpointAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, string name) =>
        options.CloudEndpoints.Any(e => string.Equals(e.Name, name, StringComparison.OrdinalIgnoreCase))
            ? ReadOnly(context, "endpoint", name)
            : await DeleteAsync(context, controlPlane, ResourceKinds.Endpoint, name).ConfigureAwait(false);

    private static Ok<IReadOnlyList<ConnectionCount>> ListConnections(ControlPlane.ControlPlane controlPlane, RelayOptions options, CloudEndpointHost host, string? tenant) =>
        TypedResults.Ok<IReadOnlyList<ConnectionCount>>([.. AllEndpoints(controlPlane, options, host)
            .Where(e => tenant is null || e.Spec.Tenant == tenant)
            .OrderBy(e => e.Spec.Name, StringComparer.Ordinal)
            .Select(e => new ConnectionCount(e.Spec.Name, e.Spec.Tenant, e.ActiveConnections))]);

    // ---------------------------------------------------------------------------------------------------------------
    // Subscriptions, dead letters, events

    private const int MaxSubscriptionsPerTenant = 10;

    private static IEnumerable<SubscriptionInfo> AllSubscriptions(ControlPlane.ControlPlane controlPlane, RelayOptions options) =>
        options.Webhooks.Select(w => new SubscriptionInfo(w.Id, w.Tenant, w.Url, [.. w.Events], "config", null, 0))
            .Concat(controlPlane.State.Parsed<SubscriptionBody>(ResourceKinds.Subscription)
                .Select(x => new SubscriptionInfo(x.Resource.Name, x.Resource.Tenant, x.Body.Url, x.Body.Events, "api", x.Resource.CreatedAt, x.Resource.Version)));

    private static Ok<Page<SubscriptionInfo>> ListSubscriptions(ControlPlane.ControlPlane controlPlane, RelayOptions options, string? tenant, int? limit, string? cursor) =>
        TypedResults.Ok(Paginate(AllSubscriptions(controlPlane, options).Where(s => tenant is null || s.Tenant == tenant), s => s.Id, limit, cursor));

    private static Results<Ok<SubscriptionInfo>, ProblemHttpResult> GetSubscription(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, string id) =>
        AllSubscriptions(controlPlane, options).FirstOrDefault(s => s.Id == id) is { } subscription
            ? WithETag(context, subscription.Version, subscription)
            : NotFound(context, "subscription", id);

    private static async Task<Results<Created<SubscriptionCreated>, ProblemHttpResult>> CreateSubscriptionAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, SubscriptionCreate request)
    {
        var id = "sub_" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
        var secret = NewSecret("whsec_");
        if (request.Tenant != "*" && !TenantExists(controlPlane, options, request.Tenant))
        {
            return Invalid(context, $"tenant '{Internal.SafeText.Clean(request.Tenant, 64)}' does not exist (or use '*' for every tenant's events).");
        }

        if (request.Events is not { Count: > 0 and <= 8 })
        {
            return Invalid(context, $"events must list 1 to 8 of: {string.Join(", ", RelayEventTypes.All)}.");
        }

        if (WebhookRules.Problems(id, request.Tenant, request.Url, secret, request.Events).ToList() is { Count: > 0 } problems)
        {
            return Invalid(context, string.Join(" ", problems));
        }

        if (AllSubscriptions(controlPlane, options).Count(s => s.Tenant == request.Tenant) >= MaxSubscriptionsPerTenant)
        {
            return Conflict(context, $"tenant '{request.Tenant}' has {MaxSubscriptionsPerTenant.ToString(CultureInfo.InvariantCulture)} subscriptions, the most it may");
        }

        return await WriteAsync(context, controlPlane, async store =>
        {
            // The cap is checked again where concurrent creates cannot all pass it (the check above reads what was applied).
            var created = await store.CreateAsync(ResourceKinds.Subscription, id, request.Tenant, StoreJson.Write(new SubscriptionBody(request.Url, [.. request.Events.Distinct(StringComparer.Ordinal)], secret)), context.RequestAborted,
                requireTenant: request.Tenant != "*" && !IsConfiguredTenant(options, request.Tenant),
                maxOfTenant: MaxSubscriptionsPerTenant - options.Webhooks.Count(w => w.Tenant == request.Tenant)).ConfigureAwait(false);
            context.Response.Headers.ETag = ETag(created.Version);
            return TypedResults.Created($"/v1/subscriptions/{id}",
                new SubscriptionCreated(new SubscriptionInfo(id, request.Tenant, request.Url, [.. request.Events.Distinct(StringComparer.Ordinal)], "api", created.CreatedAt, created.Version), secret));
        }).ConfigureAwait(false);
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteSubscriptionAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, RelayOptions options, string id) =>
        options.Webhooks.Any(w => w.Id == id) ? ReadOnly(context, "subscription", id) : await DeleteAsync(context, controlPlane, ResourceKinds.Subscription, id).ConfigureAwait(false);

    private static Task<Results<Ok<Page<DeadLetterInfo>>, ProblemHttpResult>> ListDeadLettersOfAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, string id, int? limit, string? cursor) =>
        DeadLettersAsync(context, controlPlane, id, null, limit, cursor);

    private static Task<Results<Ok<Page<DeadLetterInfo>>, ProblemHttpResult>> ListDeadLettersAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, string? tenant, int? limit, string? cursor) =>
        DeadLettersAsync(context, controlPlane, null, tenant, limit, cursor);

    private static async Task<Results<Ok<Page<DeadLetterInfo>>, ProblemHttpResult>> DeadLettersAsync(HttpContext context, ControlPlane.ControlPlane controlPlane, string? subscription, string? tenant, int? limit, string? cursor)
    {
        if (!TryBefore(cursor, out var before))
        {
            return Invalid(context, "cursor is not one this API returned.");
        }

        var page = await controlPlane.Store!.ListDeadLettersAsync(subscription, tenant, before, limit ?? DefaultPageSize, context.RequestAborted).ConfigureAwait(false);
        return TypedResults.Ok(new Page<DeadLetterInfo>([.. page.Items.Select(d => new DeadLetterInfo(d.Id, d.Subscription, d.Tenant, d.EventId, d.EventType, d.Payload, d.Error, d.Attempts, d.At))], page.Next));
    }

    private static Ok<Page<EventInfo>> RecentEvents(EventHub hub, string? tenant, int? limit)
    {
        var events = hub.Recent(tenant, Math.Clamp(limit ?? DefaultPageSize, 1, EventHub.RecentCapacity));
        return TypedResults.Ok(new Page<EventInfo>([.. events.Select(e =>
        {
            using var body = JsonDocument.Parse(e.Body);
            var data = body.RootElement.TryGetProperty("data", out var value) ? value.Clone() : default;
            return new EventInfo(e.Id, e.Type, e.Tenant, e.Subject, e.Time, data);
        })], null));
    }
}
