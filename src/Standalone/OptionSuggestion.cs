namespace SiteLink.Standalone;

/// <summary>
/// " Did you mean --relay?" for a mistyped command-line switch one or two edits away from a known one. Compiled into
/// the standalone relay and agent.
/// </summary>
internal static class OptionSuggestion
{
    public static string DidYouMean(string given, IEnumerable<string> known)
    {
        var best = known.Select(k => (Known: k, Distance: Distance(given.ToLowerInvariant(), k.ToLowerInvariant()))).MinBy(c => c.Distance);
        return best.Known is not null && best.Distance <= 2 ? $" Did you mean {best.Known}?" : "";
    }

    /// <summary>Levenshtein distance (switches are short).</summary>
    private static int Distance(string a, string b)
    {
        var previous = Enumerable.Range(0, b.Length + 1).ToArray();
        for (var i = 1; i <= a.Length; i++)
        {
            var current = new int[b.Length + 1];
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitution, Math.Min(previous[j], current[j - 1]) + 1);
            }

            previous = current;
        }

        return previous[b.Length];
    }
}
