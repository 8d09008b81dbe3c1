using System.Globalization;
using System.Net;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Configuration;

/// <summary>Checks a <see cref="RelayOptions"/> and lists every problem at once. Never quotes a secret.</summary>
public static class RelayOptionsValidator
{
    /// <summary>Returns every problem found; empty when the options are valid.</summary>
    public static IReadOnlyList<string> Validate(RelayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(options.RelayId))
        {
            errors.Add("Relay:RelayId must not be empty.");
        }

        if (!TryParseEndPoint(options.AgentListen, out _))
        {
            errors.Add($"Relay:AgentListen '{options.AgentListen}' is not an ip:port address.");
        }

        ValidateTls(options.Tls, errors);
        ValidateTokens(options.Tokens, errors);
        ValidateCloudEndpoints(options, errors);
        ValidateLimits(options.Limits, errors);
        if (options.DrainTimeout < TimeSpan.Zero)
        {
            errors.Add("Relay:DrainTimeout must not be negative.");
        }

        return errors;
    }

    /// <summary>Throws <see cref="RelayConfigurationException"/> listing every problem, if there is any.</summary>
    public static void ThrowIfInvalid(RelayOptions options)
    {
        var errors = Validate(options);
        if (errors.Count > 0)
        {
            throw new RelayConfigurationException(errors);
        }
    }

    /// <summary>Parses a validated <c>ip:port</c>.</summary>
    internal static IPEndPoint ParseEndPoint(string text) =>
        TryParseEndPoint(text, out var endPoint) ? endPoint : throw new FormatException($"'{text}' is not an ip:port address.");

    internal static bool TryParseEndPoint(string? text, out IPEndPoint endPoint)
    {
        endPoint = null!;
        if (string.IsNullOrWhiteSpace(text) || !IPEndPoint.TryParse(text, out var parsed) || parsed is null)
        {
            return false;
        }

        // IPEndPoint.TryParse accepts a bare address as port 0; insist on an explicit port.
        var hasPort = text.StartsWith('[') ? text.Contains("]:", StringComparison.Ordinal) : text.Count(c => c == ':') == 1;
        if (!hasPort)
        {
            return false;
        }

        endPoint = parsed;
        return true;
    }

    private static void ValidateTls(RelayTlsOptions tls, List<string> errors)
    {
        if (tls.Disabled && tls.CertificatePath is not null)
        {
            errors.Add("Relay:Tls: CertificatePath is set but Disabled is true; choose one.");
        }

        if (tls.CertificatePath is not null && !File.Exists(tls.CertificatePath))
        {
            errors.Add($"Relay:Tls:CertificatePath '{tls.CertificatePath}' does not exist.");
        }

        if (tls.KeyPath is not null && !File.Exists(tls.KeyPath))
        {
            errors.Add($"Relay:Tls:KeyPath '{tls.KeyPath}' does not exist.");
        }
    }

    private static void ValidateTokens(IList<AuthTokenOptions> tokens, List<string> errors)
    {
        if (tokens.Count == 0)
        {
            errors.Add("Relay:Tokens is empty: no agent could connect. Add at least one token.");
        }

        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var secrets = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < tokens.Count; i++)
        {
            var token = tokens[i];
            var where = $"Relay:Tokens:{i.ToString(CultureInfo.InvariantCulture)}";
            if (string.IsNullOrWhiteSpace(token.Name))
            {
                errors.Add($"{where}:Name is required.");
            }
            else if (!names.Add(token.Name))
            {
                errors.Add($"{where}:Name '{token.Name}' is used by another token.");
            }

            var label = string.IsNullOrWhiteSpace(token.Name) ? where : $"token '{token.Name}'";
            var hasSecret = !string.IsNullOrEmpty(token.Token);
            var hasHash = !string.IsNullOrEmpty(token.Sha256);
            if (hasSecret == hasHash)
            {
                errors.Add($"{where}: {label} needs exactly one of Token or Sha256.");
            }
            else if (hasHash && AuthTokenStore.TryParseSha256(token.Sha256!) is null)
            {
                errors.Add($"{where}:Sha256 of {label} must be 64 hexadecimal digits.");
            }
            else if (hasSecret && token.Token!.Length < 16)
            {
                errors.Add($"{where}:Token of {label} is too short (at least 16 characters).");
            }
            else
            {
                if (!secrets.Add(AuthTokenStore.SecretHashOf(token)))
                {
                    errors.Add($"{where}: {label} has the same secret as another token.");
                }
            }

            if (string.IsNullOrWhiteSpace(token.Tenant))
            {
                errors.Add($"{where}:Tenant of {label} is required.");
            }

            if (token.Allow.Count == 0)
            {
                errors.Add($"{where}:Allow of {label} is empty; list the endpoint names it may bind ('*' for any).");
            }

            foreach (var pattern in token.Allow)
            {
                if (!EndpointAcl.IsValidPattern(pattern))
                {
                    errors.Add($"{where}:Allow pattern '{pattern}' of {label} is invalid (letters, digits, '-', '_', '.', '*', '?').");
                }
            }
        }
    }

    private static void ValidateCloudEndpoints(RelayOptions options, List<string> errors)
    {
        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var listens = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var tenants = new HashSet<string>(options.Tokens.Select(t => t.Tenant), StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < options.CloudEndpoints.Count; i++)
        {
            var endpoint = options.CloudEndpoints[i];
            var where = $"Relay:CloudEndpoints:{i.ToString(CultureInfo.InvariantCulture)}";
            if (string.IsNullOrWhiteSpace(endpoint.Name))
            {
                errors.Add($"{where}:Name is required.");
            }
            else if (!names.Add(endpoint.Name))
            {
                errors.Add($"{where}:Name '{endpoint.Name}' is used by another cloud endpoint.");
            }

            if (!string.Equals(endpoint.Protocol, "tcp", StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"{where}:Protocol '{endpoint.Protocol}' is not supported (this relay serves 'tcp').");
            }

            if (!TryParseEndPoint(endpoint.Listen, out var listen))
            {
                errors.Add($"{where}:Listen '{endpoint.Listen}' is not an ip:port address.");
            }
            else if (listen.Port != 0 && !listens.Add(listen.ToString()))
            {
                errors.Add($"{where}:Listen '{endpoint.Listen}' is used by another cloud endpoint.");
            }

            if (string.IsNullOrWhiteSpace(endpoint.Tenant))
            {
                errors.Add($"{where}:Tenant is required.");
            }
            else if (!tenants.Contains(endpoint.Tenant))
            {
                errors.Add($"{where}:Tenant '{endpoint.Tenant}' has no token, so no agent could serve it.");
            }

            if (!EndpointAcl.IsValidName(endpoint.Endpoint))
            {
                errors.Add($"{where}:Endpoint '{endpoint.Endpoint}' is not a valid internal endpoint name.");
            }
        }
    }

    private static void ValidateLimits(RelayLimits limits, List<string> errors)
    {
        void Positive(string name, int value)
        {
            if (value < 1)
            {
                errors.Add($"Relay:Limits:{name} must be at least 1 (was {value.ToString(CultureInfo.InvariantCulture)}).");
            }
        }

        Positive(nameof(limits.MaxSessionsPerToken), limits.MaxSessionsPerToken);
        Positive(nameof(limits.MaxBindsPerSession), limits.MaxBindsPerSession);
        Positive(nameof(limits.MaxConcurrentStreamsPerSession), limits.MaxConcurrentStreamsPerSession);
        Positive(nameof(limits.MaxPendingStreamsPerSession), limits.MaxPendingStreamsPerSession);
        if (limits.MaxParkedStreamsPerSession < 0)
        {
            errors.Add("Relay:Limits:MaxParkedStreamsPerSession must not be negative.");
        }

        if (limits.MaxFrameSize is < 1024 or > 1024 * 1024)
        {
            errors.Add($"Relay:Limits:MaxFrameSize must be between 1024 and 1048576 bytes (was {limits.MaxFrameSize.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (limits.PendingStreamTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:PendingStreamTimeout must be positive.");
        }

        if (limits.SessionSilenceTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:SessionSilenceTimeout must be positive.");
        }

        if (limits.HelloTimeout <= TimeSpan.Zero)
        {
            errors.Add("Relay:Limits:HelloTimeout must be positive.");
        }
    }
}

/// <summary>The relay's configuration is invalid. The message lists every problem.</summary>
public sealed class RelayConfigurationException : Exception
{
    /// <summary>Creates the exception from the list of problems.</summary>
    public RelayConfigurationException(IReadOnlyList<string> errors)
        : base("Invalid SiteLink relay configuration:" + Environment.NewLine + "- " + string.Join(Environment.NewLine + "- ", errors))
    {
        Errors = errors;
    }

    /// <summary>Every problem found.</summary>
    public IReadOnlyList<string> Errors { get; }
}
