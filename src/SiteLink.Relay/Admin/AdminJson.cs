using System.Collections;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Http;
using SiteLink.Relay.Configuration;

namespace SiteLink.Relay.Admin;

/// <summary>How the admin API reads request bodies, and what it answers when it cannot.</summary>
internal static class AdminJson
{
    /// <summary>
    /// Refuses, as malformed JSON, the nulls the relay's settings classes (<see cref="TrafficPolicyOptions"/> and its
    /// rules, in a cloud endpoint's body) cannot hold: null for a property that is not nullable (a rule's type, a list)
    /// and a null entry of a list or map (an address range, a header's value). Configuration binding never makes them
    /// null, so the code reading them does not check; JSON can, and a caller got a 500.
    /// </summary>
    public static void RefuseNulls(JsonTypeInfo info)
    {
        if (info.Kind != JsonTypeInfoKind.Object || info.Type.Namespace != typeof(RelayOptions).Namespace)
        {
            return;
        }

        var nullability = new NullabilityInfoContext();
        var members = new List<(JsonPropertyInfo Property, PropertyInfo Member)>();
        foreach (var property in info.Properties)
        {
            if (property.PropertyType.IsValueType || property.AttributeProvider is not PropertyInfo member)
            {
                continue;
            }

            members.Add((property, member));
            var declared = nullability.Create(member);
            if ((member.CanWrite ? declared.WriteState : declared.ReadState) != NullabilityState.NotNull)
            {
                continue;
            }

            // A get-only list is filled in place (no setter: STJ would throw InvalidOperationException on a null); a
            // setter that refuses null makes it a JsonException, answered 400 like any other malformed body.
            var set = property.Set;
            var name = property.Name;
            property.Set = (target, value) =>
            {
                if (value is null)
                {
                    throw new JsonException($"{name} must not be null.");
                }

                set?.Invoke(target, value);
            };
        }

        info.OnDeserialized = target =>
        {
            foreach (var (property, member) in members)
            {
                var value = member.GetValue(target);
                var holdsNull = value switch
                {
                    IDictionary map => map.Values.Cast<object?>().Any(v => v is null),
                    string => false,
                    IEnumerable list => list.Cast<object?>().Any(v => v is null),
                    _ => false,
                };
                if (holdsNull)
                {
                    throw new JsonException($"{property.Name} must not hold null.");
                }
            }
        };
    }

    /// <summary>A request body over <see cref="AdminApi.MaxRequestBodySize"/>.</summary>
    public static readonly (int Status, string Type, string Title, string Detail) TooLarge =
        (StatusCodes.Status413PayloadTooLarge, "too-large", "Request body too large", $"The request body is larger than {AdminApi.MaxRequestBodySize / 1024} KiB.");

    /// <summary>
    /// Types the problems the framework answers by itself (status code pages) where the API's callers expect one of its
    /// own: a body over the limit, refused while it is read.
    /// </summary>
    public static void TypeFrameworkProblems(ProblemDetailsContext context)
    {
        var problem = context.ProblemDetails;
        if (problem.Status == StatusCodes.Status413PayloadTooLarge && problem.Type?.StartsWith(ProblemTypes, StringComparison.Ordinal) != true)
        {
            (_, var type, problem.Title, problem.Detail) = TooLarge;
            problem.Type = ProblemTypes + type;
        }
    }

    private const string ProblemTypes = "urn:sitelink:problem:";

    /// <summary>What the admin API answers for an exception a call ended with: a request it could not read, or its own failure.</summary>
    public static (int Status, string Type, string Title, string Detail) Describe(Exception? exception)
    {
        if (exception is BadHttpRequestException bad)
        {
            // The framework's message names what could not be read ("...the request body as JSON", "...parameter
            // \"int? limit\" from \"x\""); the JSON reader's says where and why, never quoting the body.
            var json = bad.InnerException as JsonException;
            var where = json?.Path is { } path && !json.Message.Contains(path, StringComparison.Ordinal) ? $" (at {path})" : "";
            var detail = json is null ? bad.Message : $"{bad.Message} {json.Message}{where}";
            return bad.StatusCode == StatusCodes.Status413PayloadTooLarge ? TooLarge : (bad.StatusCode, "malformed", "Malformed request", detail);
        }

        return (StatusCodes.Status500InternalServerError, "internal", "Internal error", "The relay failed to handle this call; it logged why.");
    }
}
