using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Json;
using Microsoft.Extensions.FileProviders;

namespace SiteLink.Relay.Configuration;

/// <summary>Reads <see cref="RelayOptions"/> from configuration (JSON files, environment variables, command line).</summary>
public static class RelayConfiguration
{
    /// <summary>
    /// The keys whose values are file paths. A relative one is resolved against the folder of the JSON file that set it
    /// (so <c>"CertificatePath": "relay.pfx"</c> in <c>/etc/sitelink/relay.json</c> is <c>/etc/sitelink/relay.pfx</c>
    /// whoever starts the relay, from wherever), or against the working directory when it came from the environment or
    /// the command line.
    /// </summary>
    internal static readonly string[] PathKeys = ["Relay:Tls:CertificatePath", "Relay:Tls:KeyPath", "Relay:Tls:DevelopmentCertificatePath", "Relay:Store:Path"];

    /// <summary>
    /// Binds the <c>Relay</c> section of <paramref name="configuration"/> and makes its file paths absolute. Does not
    /// validate. A value that cannot be converted (e.g. <c>"HelloTimeout": "ten seconds"</c>) throws
    /// <see cref="RelayConfigurationException"/> naming the key.
    /// </summary>
    public static RelayOptions Load(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var options = new RelayOptions();
        try
        {
            configuration.GetSection(RelayOptions.SectionName).Bind(options);
        }
        catch (InvalidOperationException ex)
        {
            // The binder's message names the value, the key and the type ("Failed to convert configuration value 'ten
            // seconds' at 'Relay:Limits:HelloTimeout' to type 'System.TimeSpan'."), capped. Secrets are strings, which
            // always convert, so they never appear here.
            throw new RelayConfigurationException([SiteLink.Internal.SafeText.Clean(ex.Message, 512) + Hint(ex)]);
        }

        options.Tls.CertificatePath = ResolvePath(configuration, PathKeys[0], options.Tls.CertificatePath);
        options.Tls.KeyPath = ResolvePath(configuration, PathKeys[1], options.Tls.KeyPath);
        options.Tls.DevelopmentCertificatePath = ResolvePath(configuration, PathKeys[2], options.Tls.DevelopmentCertificatePath);
        options.Store.Path = ResolvePath(configuration, PathKeys[3], options.Store.Path);
        return options;
    }

    /// <summary>
    /// Adds the JSON file named on the command line (relative to the working directory), watched for changes. A missing
    /// or malformed file throws <see cref="RelayConfigurationException"/> naming the file and, for JSON, the line.
    /// </summary>
    public static void AddConfigFile(IConfigurationBuilder configuration, string path)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        try
        {
            Standalone.ConfigFile.AddJson(configuration, path, reloadOnChange: true, "the relay");
        }
        catch (Standalone.ConfigFileException ex)
        {
            throw new RelayConfigurationException([ex.Message]);
        }
    }

    private static string Hint(InvalidOperationException ex) =>
        ex.InnerException is FormatException or OverflowException && ex.Message.Contains("TimeSpan", StringComparison.Ordinal)
            ? " Durations are written hh:mm:ss, e.g. \"00:00:10\"."
            : "";

    private static string? ResolvePath(IConfiguration configuration, string key, string? value)
    {
        if (string.IsNullOrEmpty(value) || Path.IsPathFullyQualified(value))
        {
            return value;
        }

        return Path.GetFullPath(value, SourceFolder(configuration, key) ?? Directory.GetCurrentDirectory());
    }

    /// <summary>The folder of the JSON file that supplies <paramref name="key"/>'s value (the last source that has it wins).</summary>
    private static string? SourceFolder(IConfiguration configuration, string key)
    {
        if (configuration is not IConfigurationRoot root)
        {
            return null;
        }

        foreach (var provider in root.Providers.Reverse())
        {
            if (!provider.TryGet(key, out _))
            {
                continue;
            }

            return FileOf(provider) is { } file ? Path.GetDirectoryName(file) : null;
        }

        return null;
    }

    /// <summary>The full path of the JSON file a configuration provider reads; null for any other provider.</summary>
    internal static string? FileOf(IConfigurationProvider provider) =>
        provider is JsonConfigurationProvider { Source: { FileProvider: PhysicalFileProvider files, Path: { } file } }
            ? Path.Combine(files.Root, file)
            : null;
}
