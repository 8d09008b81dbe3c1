namespace SiteLink.AspNetCore;

/// <summary>
/// The tunnelled connection behind a Kestrel connection served through SiteLink: who the relay says connected, to which
/// endpoint, and its stream id for correlating the relay's logs. Read it with
/// <c>HttpContext.Features.Get&lt;ISiteLinkConnectionFeature&gt;()</c> (null for connections of other transports).
/// <c>HttpContext.Connection.RemoteIpAddress</c> and <c>RemotePort</c> already give <see cref="TunnelConnectionInfo.ClientAddress"/>.
/// </summary>
public interface ISiteLinkConnectionFeature
{
    /// <summary>Who connected, and to which endpoint.</summary>
    TunnelConnectionInfo Info { get; }
}
