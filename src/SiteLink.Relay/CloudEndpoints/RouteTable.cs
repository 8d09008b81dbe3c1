using System.Net;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.CloudEndpoints;

/// <summary>What a listener routes a connection or request to: one cloud endpoint as it runs there.</summary>
internal interface IEndpointRoute
{
    /// <summary>The endpoint's settings now (replaced whole by <see cref="TryUpdate"/>; each connection or request reads it once).</summary>
    CloudEndpointOptions Endpoint { get; }

    /// <summary>Public connections (tcp, tls) or requests (http, https) in flight through this route now.</summary>
    int ActiveConnections { get; }

    /// <summary>
    /// Applies <paramref name="endpoint"/> (same protocol, address, host names and TLS material) to new connections and
    /// requests; established ones keep what they started with. False when this route cannot take it in place (a new
    /// route must replace it).
    /// </summary>
    bool TryUpdate(CloudEndpointOptions endpoint);

    /// <summary>No longer routed to: lets go of what it holds once the connections or requests still using it are done.</summary>
    void Retire();
}

/// <summary>A listening address of cloud endpoints: a tcp endpoint's own port, or a tls, http or https listener shared by host name.</summary>
internal interface ICloudListener
{
    /// <summary><c>tcp</c>, <c>tls</c>, <c>http</c> or <c>https</c>.</summary>
    string Protocol { get; }

    /// <summary>Which endpoints share it (<see cref="RelayOptionsValidator.ListenerKey"/>).</summary>
    string Key { get; }

    /// <summary>The address actually bound (the real port when the configuration said 0).</summary>
    IPEndPoint LocalEndPoint { get; }

    /// <summary>The endpoints it routes to.</summary>
    IRouteTable Routes { get; }

    /// <summary>
    /// Stops accepting at once; connections already accepted go on until they finish or <paramref name="abort"/> is
    /// cancelled (http, https: their requests in flight; Kestrel's graceful stop).
    /// </summary>
    Task StopAsync(CancellationToken abort);
}

/// <summary>A listener's routes as the cloud endpoint host changes them, whatever the kind of route.</summary>
internal interface IRouteTable
{
    /// <summary>The routes now, one per endpoint.</summary>
    IReadOnlyList<IEndpointRoute> Routes { get; }

    /// <summary>The route of the endpoint named <paramref name="name"/>; null when there is none.</summary>
    IEndpointRoute? Find(string name);

    /// <summary>A host name of <paramref name="endpoint"/> that another endpoint is served at here, and which; null when none is.</summary>
    (string Hostname, string Endpoint)? Conflict(CloudEndpointOptions endpoint);

    /// <summary>Routes <paramref name="route"/>'s host names to it, replacing the route of an endpoint of the same name in the same swap.</summary>
    void Set(IEndpointRoute route);

    /// <summary>Stops routing to the endpoint named <paramref name="name"/>; its route, or null.</summary>
    IEndpointRoute? Remove(string name);
}

/// <summary>
/// The routes of one listener. Changed by one caller at a time (the cloud endpoint host, serially); read by every
/// connection or request as one immutable <see cref="HostRouter{T}"/> snapshot (<see cref="Current"/>), replaced
/// whole on each change, so a change never locks or disturbs a reader, and a reader never sees half of one.
/// </summary>
internal sealed class RouteTable<T> : IRouteTable
    where T : class, IEndpointRoute
{
    private HostRouter<T> _current;

    public RouteTable(IEnumerable<T> routes) => _current = Build([.. routes]);

    /// <summary>The routes in force: one field read per connection or request.</summary>
    public HostRouter<T> Current => Volatile.Read(ref _current);

    public IReadOnlyList<IEndpointRoute> Routes => Current.Routes;

    public IEndpointRoute? Find(string name) => Current.Routes.FirstOrDefault(r => Named(r, name));

    public (string Hostname, string Endpoint)? Conflict(CloudEndpointOptions endpoint)
    {
        var current = Current;
        foreach (var hostname in endpoint.Hostnames)
        {
            var pattern = HostRouter<T>.Normalize(hostname);
            foreach (var other in current.Routes)
            {
                if (!Named(other, endpoint.Name) && other.Endpoint.Hostnames.Any(h => HostRouter<T>.Normalize(h) == pattern))
                {
                    return (hostname, other.Endpoint.Name);
                }
            }
        }

        return null;
    }

    public void Set(IEndpointRoute route)
    {
        var typed = (T)route;
        Volatile.Write(ref _current, Build([.. Current.Routes.Where(r => !Named(r, typed.Endpoint.Name)), typed]));
    }

    public IEndpointRoute? Remove(string name)
    {
        var current = Current;
        var removed = current.Routes.FirstOrDefault(r => Named(r, name));
        if (removed is not null)
        {
            Volatile.Write(ref _current, Build([.. current.Routes.Where(r => r != removed)]));
        }

        return removed;
    }

    private static bool Named(T route, string name) => string.Equals(route.Endpoint.Name, name, StringComparison.OrdinalIgnoreCase);

    private static HostRouter<T> Build(T[] routes) => new(routes, r => r.Endpoint.Hostnames);
}
