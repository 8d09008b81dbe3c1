namespace SiteLink;

/// <summary>How a bridged connection ended; tells which side failed instead of throwing.</summary>
internal enum BridgeResult
{
    /// <summary>Both sides finished their sending direction and the connection closed cleanly.</summary>
    Completed,

    /// <summary>The local upstream failed (reset, refused a write).</summary>
    UpstreamFailed,

    /// <summary>The tunnel failed (public client went away, relay or network lost).</summary>
    TunnelFailed,

    /// <summary>The session was closing.</summary>
    Canceled,
}
