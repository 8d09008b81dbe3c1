using System.Diagnostics.CodeAnalysis;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SiteLink;
using SiteLink.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds a SiteLink agent session to a generic host.</summary>
public static class SiteLinkServiceCollectionExtensions
{
    /// <summary>The configuration section <see cref="AddSiteLink(IServiceCollection)"/> binds: <c>SiteLink</c>.</summary>
    public const string DefaultSectionName = "SiteLink";

#if !NET10_0_OR_GREATER
    private const string Net8BindingNote =
        "On .NET 8, SiteLink binds configuration by reflection (the source generator of Microsoft.Extensions.Configuration.Binder 8.x "
        + "cannot be used with current compilers). For trimming or native AOT on .NET 8, set the options in code with "
        + "AddSiteLink(options => ...); on .NET 10 every overload is trimming- and AOT-safe.";
#endif

    /// <summary>
    /// Registers <see cref="ITunnelSession"/> as a singleton started and stopped with the host, with options bound
    /// from the <c>SiteLink</c> configuration section (endpoints included) and validated on start.
    /// </summary>
#if !NET10_0_OR_GREATER
    [RequiresUnreferencedCode(Net8BindingNote)]
    [RequiresDynamicCode(Net8BindingNote)]
#endif
    public static ISiteLinkBuilder AddSiteLink(this IServiceCollection services) => services.AddSiteLink(DefaultSectionName);

    /// <summary>As <see cref="AddSiteLink(IServiceCollection)"/>, binding the configuration section at <paramref name="sectionPath"/>.</summary>
#if !NET10_0_OR_GREATER
    [RequiresUnreferencedCode(Net8BindingNote)]
    [RequiresDynamicCode(Net8BindingNote)]
#endif
    public static ISiteLinkBuilder AddSiteLink(this IServiceCollection services, string sectionPath)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(sectionPath);
        // Bound by the configuration binder's source generator (trimming- and AOT-safe), read once when the session is created.
        services.AddOptions<TunnelSessionOptions>().Configure<IConfiguration>((options, configuration) => configuration.GetSection(sectionPath).Bind(options));
        return AddSiteLinkCore(services);
    }

    /// <summary>As <see cref="AddSiteLink(IServiceCollection)"/>, binding <paramref name="configuration"/> (a section).</summary>
#if !NET10_0_OR_GREATER
    [RequiresUnreferencedCode(Net8BindingNote)]
    [RequiresDynamicCode(Net8BindingNote)]
#endif
    public static ISiteLinkBuilder AddSiteLink(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<TunnelSessionOptions>().Configure(options => configuration.Bind(options));
        return AddSiteLinkCore(services);
    }

    /// <summary>As <see cref="AddSiteLink(IServiceCollection)"/>, with options set in code instead of configuration.</summary>
    public static ISiteLinkBuilder AddSiteLink(this IServiceCollection services, Action<TunnelSessionOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<TunnelSessionOptions>().Configure(configure);
        return AddSiteLinkCore(services);
    }

    private static SiteLinkBuilder AddSiteLinkCore(IServiceCollection services)
    {
        services.AddOptions<TunnelSessionOptions>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TunnelSessionOptions>, TunnelSessionOptionsValidator>());
        services.TryAddSingleton(CreateSession);
        services.TryAddSingleton<ITunnelSession>(sp => sp.GetRequiredService<TunnelSession>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, SiteLinkHostedService>());
        return new SiteLinkBuilder(services);
    }

    private static TunnelSession CreateSession(IServiceProvider services)
    {
        // A copy: the host's IOptions value is shared and stays as configured.
        var options = services.GetRequiredService<IOptions<TunnelSessionOptions>>().Value.Snapshot();
        options.LoggerFactory ??= services.GetService<ILoggerFactory>();
        options.MeterFactory ??= services.GetService<IMeterFactory>();
        if (ReferenceEquals(options.TimeProvider, TimeProvider.System) && services.GetService<TimeProvider>() is { } time)
        {
            options.TimeProvider = time;
        }

        var session = TunnelSession.CreateUnstarted(options);
        foreach (var registration in services.GetServices<HandlerEndpointRegistration>())
        {
            session.DeclareHandler(registration.Name, registration.CreateHandler(services), registration.Options);
        }

        return session;
    }
}
