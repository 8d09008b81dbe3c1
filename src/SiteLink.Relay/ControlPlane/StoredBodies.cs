using System.Text.Json;
using System.Text.Json.Serialization;

namespace SiteLink.Relay.ControlPlane;

/// <summary>A tenant as stored.</summary>
internal sealed record TenantBody(string DisplayName);

/// <summary>An authtoken as stored: the secret's hash only.</summary>
internal sealed record TokenBody(string Sha256, IReadOnlyList<string> Allow, DateTimeOffset? ExpiresAt, DateTimeOffset? RevokedAt)
{
    /// <summary>Whether agents may use the token at <paramref name="now"/>: not revoked, not expired.</summary>
    public bool IsActiveAt(DateTimeOffset now) => RevokedAt is null && (ExpiresAt is null || ExpiresAt > now);
}

/// <summary>An admin key as stored: the secret's hash only.</summary>
internal sealed record AdminKeyBody(string Sha256, string Scope);

/// <summary>
/// A webhook subscription as stored. The signing secret is kept as is: the relay needs it to sign every delivery (it is
/// shown once, when created, and never returned by the API again).
/// </summary>
internal sealed record SubscriptionBody(string Url, IReadOnlyList<string> Events, string Secret);

/// <summary>How resource bodies are written to and read from the store (and how the admin API speaks JSON).</summary>
internal static class StoreJson
{
    public static readonly JsonSerializerOptions Options = Create();

    public static JsonSerializerOptions Create()
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web)
        {
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
            // Configuration classes expose their lists as get-only properties: fill those rather than failing.
            PreferredObjectCreationHandling = JsonObjectCreationHandling.Populate,
            MaxDepth = 16,
        };
        options.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase));
        return options;
    }

    public static string Write<T>(T body) => JsonSerializer.Serialize(body, Options);

    /// <summary>A stored body, or null when it does not parse (a row written by something else is skipped, not fatal).</summary>
    public static T? Read<T>(string json)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, Options);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
