using System.Globalization;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Events;

/// <summary>
/// Where the relay POSTs which events: every event of <paramref name="Tenant"/> (or of every tenant, <c>*</c>) whose type
/// is in <paramref name="Events"/>, signed with <paramref name="Secret"/>.
/// </summary>
/// <param name="Id">Unique among the relay's subscriptions: 1 to 64 letters, digits, '-', '_', '.' or ':'.</param>
/// <param name="Tenant">A tenant, or <c>*</c> for all of them (vendor-wide).</param>
/// <param name="Url">The receiver: an absolute http or https URL.</param>
/// <param name="Secret">The HMAC-SHA256 key of the <c>SiteLink-Signature</c> header (at least 16 characters). Never logged.</param>
/// <param name="Events">Event types (<see cref="RelayEventTypes.All"/>).</param>
/// <param name="Version">
/// Changes whenever anything else does: <see cref="EventHub.SetSubscriptions"/> keeps a subscription with the same id
/// and version as it is, and hands the queue of one whose version changed to its new settings.
/// </param>
public sealed record WebhookSubscription(string Id, string Tenant, Uri Url, string Secret, IReadOnlyList<string> Events, long Version)
{
    /// <summary>Never the secret: records print every member by default.</summary>
    public override string ToString() => $"webhook {Id} (tenant {Tenant}, {WebhookRules.Describe(Url)}, version {Version.ToString(CultureInfo.InvariantCulture)})";

    /// <summary>A configured webhook (version 0: configured ones change with a restart).</summary>
    internal static WebhookSubscription From(WebhookOptions options) =>
        new(options.Id, options.Tenant, new Uri(options.Url, UriKind.Absolute), options.Secret ?? "", [.. options.Events], 0);
}

/// <summary>What makes a subscription valid: one set of rules for <c>Relay:Webhooks</c> and subscriptions set at runtime.</summary>
internal static class WebhookRules
{
    public const int MaxIdLength = 64;
    public const int MaxUrlLength = 2048;
    public const int MinSecretLength = 16;
    public const int MaxSecretLength = 1024;

    /// <summary>Every problem of one subscription, each starting with what it is about (<c>Id</c>, <c>Url</c>, ...). Never quotes the secret.</summary>
    public static IEnumerable<string> Problems(string? id, string? tenant, string? url, string? secret, IEnumerable<string>? events)
    {
        if (string.IsNullOrEmpty(id) || id.Length > MaxIdLength || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':'))
        {
            yield return $"Id '{SafeText.Clean(id, MaxIdLength)}' must be 1 to 64 letters, digits, '-', '_', '.' or ':'.";
        }

        if (string.IsNullOrWhiteSpace(tenant) || tenant.Length > SafeText.MaxIdLength || !SafeText.IsClean(tenant))
        {
            yield return $"Tenant '{SafeText.Clean(tenant, SafeText.MaxIdLength)}' must be a tenant (1 to 64 characters) or '*' for every tenant.";
        }

        if (string.IsNullOrEmpty(url) || url.Length > MaxUrlLength || !Uri.TryCreate(url, UriKind.Absolute, out var parsed)
            || (parsed.Scheme != Uri.UriSchemeHttps && parsed.Scheme != Uri.UriSchemeHttp))
        {
            yield return $"Url must be an absolute http:// or https:// URL of at most {MaxUrlLength.ToString(CultureInfo.InvariantCulture)} characters.";
        }
        else if (parsed.UserInfo.Length > 0)
        {
            yield return "Url must not hold credentials (user:password@): every delivery is signed with the Secret instead.";
        }

        if (secret is null || secret.Length < MinSecretLength || secret.Length > MaxSecretLength)
        {
            yield return $"Secret must be {MinSecretLength.ToString(CultureInfo.InvariantCulture)} to {MaxSecretLength.ToString(CultureInfo.InvariantCulture)} characters (e.g. 'openssl rand -base64 32').";
        }

        var types = events?.ToArray() ?? [];
        if (types.Length == 0)
        {
            yield return $"Events is empty; list the event types to deliver ({string.Join(", ", RelayEventTypes.All)}).";
        }

        foreach (var type in types.Where(t => !RelayEventTypes.All.Contains(t, StringComparer.Ordinal)).Take(8))
        {
            yield return $"Events '{SafeText.Clean(type, SafeText.MaxIdLength)}' is not an event type ({string.Join(", ", RelayEventTypes.All)}).";
        }
    }

    /// <summary>A receiver for logs and dead letters: scheme, host and port only (paths and queries may hold tokens).</summary>
    public static string Describe(Uri url) => url.IsAbsoluteUri ? $"{url.Scheme}://{url.Authority}" : "(relative url)";
}
