using Microsoft.Extensions.Options;

namespace SiteLink.Hosting;

/// <summary>Validates the session options on start, with the handler endpoints declared in code: every problem at once.</summary>
internal sealed class TunnelSessionOptionsValidator : IValidateOptions<TunnelSessionOptions>
{
    private readonly HandlerEndpointRegistration[] _handlers;

    public TunnelSessionOptionsValidator(IEnumerable<HandlerEndpointRegistration> handlers) => _handlers = handlers.ToArray();

    public ValidateOptionsResult Validate(string? name, TunnelSessionOptions options)
    {
        var errors = options.Validate().ToList();
        var names = new HashSet<string>(options.Endpoints.Select(e => e.Name), StringComparer.OrdinalIgnoreCase);
        foreach (var handler in _handlers)
        {
            if (string.IsNullOrWhiteSpace(handler.Name))
            {
                errors.Add($"A handler endpoint ({handler.HandlerType.Name}) has no name.");
            }
            else if (!names.Add(handler.Name))
            {
                errors.Add($"Endpoint name '{handler.Name}' ({handler.HandlerType.Name}) is declared more than once.");
            }

            if (handler.Options.FindProblem() is { } problem)
            {
                errors.Add($"Endpoint '{handler.Name}' ({handler.HandlerType.Name}): {problem}.");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
