using System.Globalization;

namespace SiteLink.Internal;

/// <summary>
/// The limits on an endpoint's description and metadata (compiled into the agent and the relay): the SDK refuses a
/// value past them before sending, and the relay refuses a bind that carries one, with the same explanation. Text is
/// refused rather than cut, so what the relay stores is exactly what the agent declared.
/// </summary>
internal static class EndpointDescriptionRules
{
    /// <summary>The longest description, in characters.</summary>
    public const int MaxDescriptionLength = 256;

    /// <summary>The most metadata entries per endpoint.</summary>
    public const int MaxMetadataEntries = 16;

    /// <summary>The longest metadata key, in characters (letters, digits, '-', '_', '.', ':', '/').</summary>
    public const int MaxMetadataKeyLength = 64;

    /// <summary>The longest metadata value, in characters.</summary>
    public const int MaxMetadataValueLength = 256;

    /// <summary>The first problem with <paramref name="description"/> and <paramref name="metadata"/>, or null when they are within the limits.</summary>
    public static string? FindProblem(string? description, IEnumerable<KeyValuePair<string, string>>? metadata)
    {
        if (description is not null)
        {
            if (description.Length > MaxDescriptionLength)
            {
                return Invariant($"the description is {description.Length} characters (at most {MaxDescriptionLength})");
            }

            if (!SafeText.IsClean(description) || HasLoneSurrogate(description))
            {
                return "the description contains control or formatting characters";
            }
        }

        if (metadata is null)
        {
            return null;
        }

        var count = 0;
        foreach (var (key, value) in metadata)
        {
            if (++count > MaxMetadataEntries)
            {
                return Invariant($"more than {MaxMetadataEntries} metadata entries");
            }

            if (string.IsNullOrEmpty(key) || key.Length > MaxMetadataKeyLength || !key.All(IsKeyChar))
            {
                return Invariant($"metadata key '{SafeText.Clean(key, MaxMetadataKeyLength)}' is not 1 to {MaxMetadataKeyLength} letters, digits, '-', '_', '.', ':' or '/'");
            }

            if (value is null)
            {
                return $"metadata '{key}' has no value";
            }

            if (value.Length > MaxMetadataValueLength)
            {
                return Invariant($"metadata '{key}' is {value.Length} characters (at most {MaxMetadataValueLength})");
            }

            if (!SafeText.IsClean(value) || HasLoneSurrogate(value))
            {
                return $"metadata '{key}' contains control or formatting characters";
            }
        }

        return null;
    }

    /// <summary>Half of a surrogate pair on its own: not text (UTF-8 cannot carry it; protobuf would turn it into U+FFFD).</summary>
    private static bool HasLoneSurrogate(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(text[i]))
            {
                return true;
            }
        }

        return false;
    }

    private static bool IsKeyChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':' or '/';

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
