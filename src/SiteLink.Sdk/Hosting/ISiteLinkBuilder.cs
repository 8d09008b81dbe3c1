namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// The session <c>AddSiteLink</c> registered, to declare its endpoints and host behaviours on with the extension
/// methods of <see cref="SiteLinkBuilderExtensions"/> (<c>AddForward</c>, <c>AddConnectionHandler</c>,
/// <c>AddHealthCheck</c>, <c>StopHostOnFault</c>).
/// </summary>
public interface ISiteLinkBuilder
{
    /// <summary>The service collection SiteLink was added to.</summary>
    IServiceCollection Services { get; }
}
