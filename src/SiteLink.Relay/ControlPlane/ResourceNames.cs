namespace SiteLink.Relay.ControlPlane;

/// <summary>What names of control plane resources may be: lower-case letters, digits, '-', '_' and '.', 1 to 64, starting with a letter or digit.</summary>
internal static class ResourceNames
{
    public const int MaxLength = 64;

    public static bool IsValid(string? name) =>
        name is { Length: > 0 and <= MaxLength }
        && char.IsAsciiLetterLower(name[0]) | char.IsAsciiDigit(name[0])
        && name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '-' or '_' or '.');

    /// <summary>A tenant id: as <see cref="IsValid"/> but letters, digits and '-' only, at most 63 (a DNS label).</summary>
    public static bool IsValidTenant(string? id) =>
        id is { Length: > 0 and <= 63 } && IsValid(id) && id.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-');
}
