using System.Diagnostics.CodeAnalysis;

namespace SiteLink.Relay.Agents;

/// <summary>
/// A semantic version as SemVer 2.0 writes it — <c>major.minor.patch</c>, an optional <c>-prerelease</c> and optional
/// <c>+build</c> metadata (accepted and ignored, as the SDK may report its informational version) — ordered by SemVer's
/// precedence: major, minor and patch numerically; a prerelease before its release; prerelease identifiers left to
/// right, numeric ones numerically and below alphanumeric ones (compared in ASCII order), a longer list above a prefix
/// of it. Numbers are compared by their digits, so no value is too large. Parsing is strict (no leading <c>v</c>, no
/// spaces, no leading zeros in numbers) and refuses anything longer than <see cref="MaxLength"/>.
/// </summary>
internal sealed class SemanticVersion : IComparable<SemanticVersion>
{
    /// <summary>The longest text parsed; a longer one is not a version this relay accepts.</summary>
    public const int MaxLength = 256;

    private readonly string[] _core;
    private readonly string[] _prerelease;

    private SemanticVersion(string[] core, string[] prerelease)
    {
        _core = core;
        _prerelease = prerelease;
    }

    /// <summary>Whether this is a prerelease (it has a <c>-prerelease</c> part).</summary>
    public bool IsPrerelease => _prerelease.Length > 0;

    /// <summary><c>major.minor.patch[-prerelease]</c>: the version without its build metadata.</summary>
    public override string ToString() =>
        string.Join('.', _core) + (_prerelease.Length == 0 ? "" : "-" + string.Join('.', _prerelease));

    /// <summary>Parses <paramref name="text"/>; false for anything that is not a SemVer 2.0 version.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out SemanticVersion? version)
    {
        version = null;
        if (string.IsNullOrEmpty(text) || text.Length > MaxLength)
        {
            return false;
        }

        var plus = text.IndexOf('+', StringComparison.Ordinal);
        if (plus >= 0 && !AreIdentifiers(text[(plus + 1)..].Split('.'), numericWithoutLeadingZero: false))
        {
            return false;
        }

        var withoutBuild = plus >= 0 ? text[..plus] : text;
        var dash = withoutBuild.IndexOf('-', StringComparison.Ordinal);
        var core = (dash >= 0 ? withoutBuild[..dash] : withoutBuild).Split('.');
        string[] prerelease = dash >= 0 ? withoutBuild[(dash + 1)..].Split('.') : [];
        if (core.Length != 3 || !core.All(IsNumber) || (dash >= 0 && !AreIdentifiers(prerelease, numericWithoutLeadingZero: true)))
        {
            return false;
        }

        version = new SemanticVersion(core, prerelease);
        return true;
    }

    /// <summary>Parses a version known to be valid (e.g. a validated setting).</summary>
    /// <exception cref="FormatException"><paramref name="text"/> is not a version.</exception>
    public static SemanticVersion Parse(string text) =>
        TryParse(text, out var version) ? version : throw new FormatException($"'{text}' is not a semantic version (major.minor.patch[-prerelease][+build]).");

    /// <summary>SemVer 2.0 precedence: negative when this version is lower than <paramref name="other"/>.</summary>
    public int CompareTo(SemanticVersion? other)
    {
        if (other is null)
        {
            return 1;
        }

        for (var i = 0; i < 3; i++)
        {
            if (CompareNumbers(_core[i], other._core[i]) is var core and not 0)
            {
                return core;
            }
        }

        // A release is above every prerelease of it.
        if (_prerelease.Length == 0 || other._prerelease.Length == 0)
        {
            return other._prerelease.Length.CompareTo(_prerelease.Length);
        }

        for (var i = 0; i < Math.Min(_prerelease.Length, other._prerelease.Length); i++)
        {
            if (CompareIdentifiers(_prerelease[i], other._prerelease[i]) is var identifier and not 0)
            {
                return identifier;
            }
        }

        return _prerelease.Length.CompareTo(other._prerelease.Length);
    }

    private static int CompareIdentifiers(string left, string right)
    {
        var leftNumeric = left.All(char.IsAsciiDigit);
        var rightNumeric = right.All(char.IsAsciiDigit);
        return (leftNumeric, rightNumeric) switch
        {
            (true, true) => CompareNumbers(left, right),
            // Numeric identifiers are below alphanumeric ones.
            (true, false) => -1,
            (false, true) => 1,
            _ => Math.Sign(string.CompareOrdinal(left, right)),
        };
    }

    /// <summary>Compares two numbers written without leading zeros: the longer is larger, else the digits decide.</summary>
    private static int CompareNumbers(string left, string right) =>
        left.Length != right.Length ? left.Length.CompareTo(right.Length) : Math.Sign(string.CompareOrdinal(left, right));

    private static bool IsNumber(string part) =>
        part.Length > 0 && part.All(char.IsAsciiDigit) && (part.Length == 1 || part[0] != '0');

    /// <summary>Dot-separated identifiers: each non-empty, of ASCII letters, digits and '-'.</summary>
    private static bool AreIdentifiers(string[] identifiers, bool numericWithoutLeadingZero) =>
        identifiers.All(identifier =>
            identifier.Length > 0
            && identifier.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')
            && (!numericWithoutLeadingZero || !identifier.All(char.IsAsciiDigit) || IsNumber(identifier)));
}
