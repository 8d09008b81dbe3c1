using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Protocol;

/// <summary>Maps wire-level results (gRPC status codes, protocol enums) to the SDK's public types.</summary>
internal static class ErrorMapping
{
    public static TunnelException FromRpc(RpcException ex, Uri relayUrl, string? certificateRejection)
    {
        // The relay's words are capped and stripped of control characters before they reach a message or a log.
        var detail = string.IsNullOrEmpty(ex.Status.Detail) ? ex.StatusCode.ToString() : SafeText.Clean(ex.Status.Detail);
        return ex.StatusCode switch
        {
            StatusCode.Unauthenticated => new TunnelAuthenticationException($"The relay at {relayUrl} rejected the authtoken: {detail}", ex),
            // The relay requires a newer SDK (its MinimumAgentVersion): its trailers say so and name the minimum.
            StatusCode.FailedPrecondition when ex.Trailers.GetValue(WireNames.RefusalTrailer) == WireNames.AgentVersionRefusal
                => new TunnelVersionException(ProtocolConstants.SdkVersion, SafeText.Clean(ex.Trailers.GetValue(WireNames.MinimumVersionTrailer), SafeText.MaxIdLength), ex),
            // The relay answers a Hello of another protocol version with FailedPrecondition (docs/protocol.md).
            StatusCode.FailedPrecondition
                => new TunnelPermissionException($"The relay at {relayUrl} refused the session: {detail}", ex, TunnelError.VersionNotSupported),
            StatusCode.PermissionDenied or StatusCode.ResourceExhausted
                => new TunnelPermissionException($"The relay at {relayUrl} refused the session: {detail}", ex),
            _ when certificateRejection is not null
                => new TunnelConnectionException($"Could not connect to the relay at {relayUrl}: {certificateRejection}.", ex, isTransient: false, TunnelError.CertificateRejected),
            _ => new TunnelConnectionException($"Could not reach the relay at {relayUrl}: {detail} ({ex.StatusCode}).", ex),
        };
    }

    public static BindErrorCode FromBindStatus(BindStatus status) => status switch
    {
        BindStatus.Denied => BindErrorCode.Denied,
        BindStatus.NameTaken => BindErrorCode.NameTaken,
        BindStatus.Invalid => BindErrorCode.Invalid,
        BindStatus.LimitExceeded => BindErrorCode.LimitExceeded,
        BindStatus.PoolingMismatch => BindErrorCode.PoolingMismatch,
        _ => BindErrorCode.Unknown,
    };

    public static EndpointKind ToWireKind(TunnelEndpointKind kind) => kind switch
    {
        // Every kind of this version carries raw TCP bytes; the kind says how the agent serves them, not the wire.
        TunnelEndpointKind.Forward or TunnelEndpointKind.Handler or TunnelEndpointKind.Listener => EndpointKind.Tcp,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };
}
