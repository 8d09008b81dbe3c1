using SiteLink.Internal;

namespace SiteLink;

/// <summary>
/// Settings of one endpoint, whatever serves it: passed to <see cref="ITunnelSession.ForwardAsync(string, Uri, EndpointOptions?, CancellationToken)"/>,
/// <see cref="ITunnelSession.ListenAsync(string, EndpointOptions?, CancellationToken)"/> and
/// <see cref="ITunnelSession.BindHandlerAsync(string, TunnelConnectionHandler, EndpointOptions?, CancellationToken)"/>,
/// and the host builder's <c>AddForward</c> and <c>AddConnectionHandler</c>; a configured endpoint
/// (<see cref="ForwardEndpointOptions"/>) carries the same settings. The session copies it when the endpoint is
/// declared: changing it afterwards changes nothing. Settings later versions add appear here (and on
/// <see cref="ForwardEndpointOptions"/>), with defaults that keep today's behaviour.
/// </summary>
public sealed class EndpointOptions
{
    /// <summary>The longest <see cref="Description"/>, in characters.</summary>
    public static int MaxDescriptionLength => EndpointDescriptionRules.MaxDescriptionLength;

    /// <summary>The most <see cref="Metadata"/> entries.</summary>
    public static int MaxMetadataEntries => EndpointDescriptionRules.MaxMetadataEntries;

    /// <summary>The longest <see cref="Metadata"/> key (letters, digits, <c>-</c>, <c>_</c>, <c>.</c>, <c>:</c>, <c>/</c>).</summary>
    public static int MaxMetadataKeyLength => EndpointDescriptionRules.MaxMetadataKeyLength;

    /// <summary>The longest <see cref="Metadata"/> value, in characters.</summary>
    public static int MaxMetadataValueLength => EndpointDescriptionRules.MaxMetadataValueLength;

    /// <summary>
    /// A one-line description for the vendor's operators (e.g. <c>"Billing database, site 3"</c>), sent to the relay
    /// with the bind. At most <see cref="MaxDescriptionLength"/> characters, no control characters. Default: none.
    /// </summary>
    public string? Description { get; set; }

    /// <summary>
    /// Key/value pairs sent to the relay with the bind (e.g. the customer's site or the service's version), for the
    /// vendor's automation and operators. At most <see cref="MaxMetadataEntries"/> entries; keys of at most
    /// <see cref="MaxMetadataKeyLength"/> letters, digits, <c>-</c>, <c>_</c>, <c>.</c>, <c>:</c> or <c>/</c>; values of at
    /// most <see cref="MaxMetadataValueLength"/> characters without control characters. Default: empty.
    /// </summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Why these settings cannot be used, or null when they can.</summary>
    internal string? FindProblem() => EndpointDescriptionRules.FindProblem(Description, Metadata);

    /// <summary>A copy the session keeps: changing this object later changes nothing.</summary>
    internal EndpointOptions Snapshot() => Copy(Description, Metadata);

    internal static EndpointOptions Copy(string? description, IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var copy = new EndpointOptions { Description = description };
        foreach (var (key, value) in metadata)
        {
            copy.Metadata[key] = value;
        }

        return copy;
    }
}
