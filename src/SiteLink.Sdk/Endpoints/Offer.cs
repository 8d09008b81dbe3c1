using Grpc.Core;
using SiteLink.Diagnostics;
using SiteLink.Internal;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink.Endpoints;

/// <summary>A connection the relay offered, with the relay connection it came on and its telemetry.</summary>
/// <param name="Run">The relay connection the offer arrived on; its stream must be opened there.</param>
/// <param name="Message">The offer itself.</param>
/// <param name="Info">What the application sees of it.</param>
/// <param name="Telemetry">Its metrics and activity, ended when the connection is released or refused.</param>
/// <param name="ParkedCall">The parked data stream the relay paired the connection with; null when it came as an OpenStream.</param>
internal sealed record Offer(ConnectionRun Run, OpenStream Message, TunnelConnectionInfo Info, ConnectionTelemetry Telemetry, AsyncDuplexStreamingCall<DataFrame, DataFrame>? ParkedCall = null)
{
    /// <summary>The relay's id of the connection (capped: it is the relay's text).</summary>
    public string StreamId => Info.StreamId;
}
