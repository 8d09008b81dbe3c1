using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Agents;

/// <summary>
/// The relay's <see cref="RelayOptions.MinimumAgentVersion"/>: which agents' SDK versions it accepts. Without a minimum
/// every agent is; with one, an agent whose <c>Hello.sdk_version</c> is older, empty or not a version is refused.
/// </summary>
internal sealed class AgentVersionPolicy
{
    public AgentVersionPolicy(RelayOptions options)
        : this(options.MinimumAgentVersion)
    {
    }

    /// <param name="minimum">A validated version, or null or empty for no minimum.</param>
    internal AgentVersionPolicy(string? minimum)
    {
        Minimum = string.IsNullOrEmpty(minimum) ? null : SemanticVersion.Parse(minimum);
    }

    /// <summary>The oldest SDK version accepted; null when any is.</summary>
    public SemanticVersion? Minimum { get; }

    /// <summary>Null when an agent reporting <paramref name="sdkVersion"/> may start a session; otherwise why not.</summary>
    public AgentVersionRefusal? Check(string? sdkVersion)
    {
        if (Minimum is null
            || (SemanticVersion.TryParse(sdkVersion, out var version) && version.CompareTo(Minimum) >= 0))
        {
            return null;
        }

        // The agent's words go into trailers, logs and events: printable ASCII only, capped.
        return new AgentVersionRefusal(SafeText.Ascii(sdkVersion, SafeText.MaxIdLength), Minimum.ToString());
    }
}

/// <summary>An agent refused for its SDK version.</summary>
/// <param name="AgentVersion">What the agent reported, made safe to echo (printable ASCII, at most 64 characters and "..."); empty when nothing.</param>
/// <param name="MinimumVersion">The relay's minimum, without build metadata.</param>
internal sealed record AgentVersionRefusal(string AgentVersion, string MinimumVersion)
{
    /// <summary>The status detail: what the relay requires and what the agent runs.</summary>
    public string Detail => AgentVersion.Length == 0
        ? $"this relay requires SiteLink SDK {MinimumVersion} or later; the agent did not say which version it runs"
        : $"this relay requires SiteLink SDK {MinimumVersion} or later; the agent runs {AgentVersion}";

    /// <summary>The FAILED_PRECONDITION that ends the control stream, with the trailers an SDK recognises (docs/protocol.md).</summary>
    public RpcException ToRpcException() => new(
        new Status(StatusCode.FailedPrecondition, Detail),
        new Metadata
        {
            { WireNames.RefusalTrailer, WireNames.AgentVersionRefusal },
            { WireNames.MinimumVersionTrailer, MinimumVersion },
            { WireNames.AgentVersionTrailer, AgentVersion },
        });
}
