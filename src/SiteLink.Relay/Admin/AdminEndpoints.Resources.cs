using Microsoft.AspNetCore.Routing;

namespace SiteLink.Relay.Admin;

internal static partial class AdminEndpoints
{
    private static void MapEndpoints(RouteGroupBuilder v1)
    {
    }

    private static void MapEvents(RouteGroupBuilder v1)
    {
    }
}
