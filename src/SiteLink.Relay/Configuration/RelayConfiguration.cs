using Microsoft.Extensions.Configuration;

namespace SiteLink.Relay.Configuration;

/// <summary>Reads <see cref="RelayOptions"/> from configuration (JSON files, environment variables, command line).</summary>
public static class RelayConfiguration
{
    /// <summary>Binds the <c>Relay</c> section of <paramref name="configuration"/>. Does not validate.</summary>
    public static RelayOptions Load(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var options = new RelayOptions();
        configuration.GetSection(RelayOptions.SectionName).Bind(options);
        return options;
    }
}
