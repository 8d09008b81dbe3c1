namespace SiteLink.Relay.Security;

/// <summary>
/// The internal endpoint names a token may bind, as wildcard patterns: <c>*</c> matches any run of characters
/// (including none), <c>?</c> exactly one. Matching ignores case.
/// </summary>
public sealed class EndpointAcl
{
    private readonly string[] _patterns;

    /// <summary>Creates an ACL from patterns.</summary>
    public EndpointAcl(IEnumerable<string> patterns)
    {
        _patterns = patterns.Select(p => p.ToLowerInvariant()).ToArray();
    }

    /// <summary>The patterns, lower-cased.</summary>
    public IReadOnlyList<string> Patterns => _patterns;

    /// <summary>Whether <paramref name="name"/> matches any pattern.</summary>
    public bool Allows(string name)
    {
        var lower = name.ToLowerInvariant();
        foreach (var pattern in _patterns)
        {
            if (Matches(pattern, lower))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Wildcard match in linear time and constant space (no regular expressions, no backtracking blow-up).
    /// </summary>
    internal static bool Matches(ReadOnlySpan<char> pattern, ReadOnlySpan<char> text)
    {
        int p = 0, t = 0, star = -1, resume = 0;
        while (t < text.Length)
        {
            if (p < pattern.Length && (pattern[p] == '?' || pattern[p] == text[t]))
            {
                p++;
                t++;
            }
            else if (p < pattern.Length && pattern[p] == '*')
            {
                star = p++;
                resume = t;
            }
            else if (star >= 0)
            {
                p = star + 1;
                t = ++resume;
            }
            else
            {
                return false;
            }
        }

        while (p < pattern.Length && pattern[p] == '*')
        {
            p++;
        }

        return p == pattern.Length;
    }

    /// <summary>
    /// Whether <paramref name="name"/> is a valid internal endpoint name: 1 to 63 characters of letters, digits,
    /// '-', '_' and '.', starting with a letter or digit.
    /// </summary>
    public static bool IsValidName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 63 || !char.IsAsciiLetterOrDigit(name[0]))
        {
            return false;
        }

        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('-' or '_' or '.'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Whether <paramref name="pattern"/> is a valid ACL pattern: name characters plus '*' and '?'.</summary>
    public static bool IsValidPattern(string? pattern)
    {
        if (string.IsNullOrEmpty(pattern) || pattern.Length > 128)
        {
            return false;
        }

        foreach (var c in pattern)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('-' or '_' or '.' or '*' or '?'))
            {
                return false;
            }
        }

        return true;
    }
}
