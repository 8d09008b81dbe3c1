using System.Globalization;
using System.Text;

namespace SiteLink.Internal;

/// <summary>
/// Text that came from the other end of the wire, made fit to store, echo or log (compiled into the agent and the
/// relay): capped in length and stripped of control and formatting characters, so a peer can neither grow our memory
/// nor forge log lines (CR/LF), colour a terminal (ESC) or reorder what an operator reads (bidi overrides).
/// </summary>
internal static class SafeText
{
    /// <summary>The longest identifier (ids, names, versions) kept or echoed.</summary>
    public const int MaxIdLength = 64;

    /// <summary>The longest free text (reasons, messages) kept or logged.</summary>
    public const int MaxMessageLength = 256;

    /// <summary>
    /// <paramref name="value"/> with every control or formatting character replaced by '?', cut to at most
    /// <paramref name="max"/> characters (then ending in '…'). Null becomes empty.
    /// </summary>
    public static string Clean(string? value, int max = MaxMessageLength)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "";
        }

        var cut = value.Length > max;
        var length = cut ? max : value.Length;
        if (cut && char.IsHighSurrogate(value[length - 1]))
        {
            // Never split a surrogate pair.
            length--;
        }

        var span = value.AsSpan(0, length);
        if (!cut && IsClean(span))
        {
            return value;
        }

        var builder = new StringBuilder(length + 1);
        foreach (var c in span)
        {
            builder.Append(IsUnsafe(c) ? '?' : c);
        }

        if (cut)
        {
            builder.Append('…');
        }

        return builder.ToString();
    }

    /// <summary>
    /// <paramref name="value"/> fit for an HTTP header or gRPC metadata value: every character outside printable ASCII
    /// (space to '~') replaced by '?', cut to at most <paramref name="max"/> characters (then ending in "...").
    /// Null becomes empty.
    /// </summary>
    public static string Ascii(string? value, int max = MaxIdLength)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "";
        }

        var cut = value.Length > max;
        var span = value.AsSpan(0, cut ? max : value.Length);
        var builder = new StringBuilder(span.Length + 3);
        foreach (var c in span)
        {
            builder.Append(c is >= ' ' and <= '~' ? c : '?');
        }

        return cut ? builder.Append("...").ToString() : builder.ToString();
    }

    /// <summary>Whether <paramref name="span"/> has no control or formatting character (so it can be stored and echoed as is).</summary>
    public static bool IsClean(ReadOnlySpan<char> span)
    {
        foreach (var c in span)
        {
            if (IsUnsafe(c))
            {
                return false;
            }
        }

        return true;
    }

    private static bool IsUnsafe(char c) =>
        char.IsControl(c) || CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;
}
