using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Configuration;

namespace SiteLink.Standalone;

/// <summary>
/// The <c>--config</c> JSON file of the standalone relay and agent: checked and read at once, so a missing, unreadable
/// or malformed file is one line naming it (and, for JSON, the line and column), never a stack trace.
/// </summary>
internal static class ConfigFile
{
    /// <summary>Adds <paramref name="path"/> (relative to the working directory) to <paramref name="configuration"/>.</summary>
    /// <param name="configuration">Where to add it.</param>
    /// <param name="path">The path as given on the command line.</param>
    /// <param name="reloadOnChange">Whether the file is watched.</param>
    /// <param name="runsAs">Who reads it, for the permission hint ("the relay", "the agent").</param>
    /// <exception cref="ConfigFileException">The file is missing, unreadable or not JSON.</exception>
    public static void AddJson(IConfigurationBuilder configuration, string path, bool reloadOnChange, string runsAs)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full))
        {
            throw new ConfigFileException($"The configuration file '{full}' (--config {path}) does not exist.");
        }

        try
        {
            // Open it once here: a file this process may not read is named in one line.
            File.OpenRead(full).Dispose();
            configuration.AddJsonFile(full, optional: false, reloadOnChange);
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException)
        {
            throw new ConfigFileException($"The configuration file '{full}' cannot be read: {ex.Message.TrimEnd('.')}. Check its permissions for the user {runsAs} runs as.");
        }
        catch (InvalidDataException ex)
        {
            throw new ConfigFileException($"The configuration file '{full}' is not valid JSON: {Describe(ex.GetBaseException())}");
        }
    }

    /// <summary>The parser's words with a one-based line and column (its own are zero-based).</summary>
    private static string Describe(Exception ex)
    {
        if (ex is not JsonException { LineNumber: { } line, BytePositionInLine: { } column } json)
        {
            return ex.Message;
        }

        var cut = json.Message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return string.Create(CultureInfo.InvariantCulture, $"line {line + 1}, column {column + 1}: {(cut > 0 ? json.Message[..cut] : json.Message)}");
    }
}

/// <summary>A <c>--config</c> file that cannot be used; the message names it and the problem in one line.</summary>
internal sealed class ConfigFileException(string message) : Exception(message);
