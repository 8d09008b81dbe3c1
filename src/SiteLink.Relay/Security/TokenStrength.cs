namespace SiteLink.Relay.Security;

/// <summary>
/// Judges a configured plaintext authtoken. Tokens are stored as unsalted SHA-256, which is sound for random secrets
/// (nobody can search 2^96 candidates) but not for words people choose: a leaked hash of those is cracked in minutes.
/// So a token must look random: enough estimated entropy, no placeholder, no repetition.
/// </summary>
internal static class TokenStrength
{
    /// <summary>The least estimated entropy, in bits, of a token: e.g. 17 random base64 characters, 25 hex digits.</summary>
    public const int MinimumBits = 96;

    private static readonly string[] Placeholders = ["changeme", "change-me", "change_me", "password", "example", "sample", "placeholder", "replace", "secret"];

    /// <summary>Why <paramref name="token"/> is weak, or null when it looks random enough.</summary>
    public static string? Weakness(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        foreach (var word in Placeholders)
        {
            if (token.Contains(word, StringComparison.OrdinalIgnoreCase))
            {
                return $"it contains the placeholder '{word}'";
            }
        }

        var distinct = token.Distinct().Count();
        if (distinct < Math.Min(10, token.Length / 2))
        {
            return $"it repeats a few characters ({distinct} different)";
        }

        var bits = EstimatedBits(token);
        if (bits < MinimumBits)
        {
            return $"about {bits:F0} bits of entropy, fewer than {MinimumBits}";
        }

        return null;
    }

    /// <summary>Length × log2(size of the character classes it uses): an upper bound, which is the point.</summary>
    internal static double EstimatedBits(string token)
    {
        var alphabet = 0;
        if (token.Any(char.IsAsciiLetterLower))
        {
            alphabet += 26;
        }

        if (token.Any(char.IsAsciiLetterUpper))
        {
            alphabet += 26;
        }

        if (token.Any(char.IsAsciiDigit))
        {
            alphabet += 10;
        }

        if (token.Any(c => !char.IsAsciiLetterOrDigit(c)))
        {
            alphabet += 33;
        }

        return token.Length * Math.Log2(Math.Max(alphabet, 2));
    }
}
