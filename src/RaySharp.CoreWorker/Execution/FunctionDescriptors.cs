using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.CompilerServices;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Names a remote function by assembly, type, method and parameter types, so overloads are never ambiguous. Built once
/// per method and cached: no reflection per call.
/// </summary>
internal static class FunctionDescriptors
{
    private static readonly ConditionalWeakTable<MethodInfo, FunctionDescriptor> s_cache = new();

    /// <summary>Describes a method of an actor's class (called on the actor), found by name and parameter types.</summary>
    public static FunctionDescriptor ForActorMethod(Type actorType, string name, Type[] parameterTypes)
    {
        var method = actorType.GetMethod(name, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance, parameterTypes)
            ?? throw new MissingMethodException($"{actorType.Name} has no instance method {name}({string.Join(", ", parameterTypes.Select(t => t.Name))})");
        return s_cache.GetValue(method, Describe);
    }

    public static FunctionDescriptor For(Delegate function)
    {
        ArgumentNullException.ThrowIfNull(function);
        var method = function.Method;
        if (!method.IsStatic)
        {
            var target = function.Target;
            // A lambda that captures nothing lives on a compiler-generated singleton (the "<>9" field of "<>c");
            // anything else carries state the worker cannot have.
            var singleton = target?.GetType().GetField("<>9", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static);
            if (target is null || singleton is null || !ReferenceEquals(singleton.GetValue(null), target))
            {
                throw new ArgumentException(
                    $"{method.DeclaringType?.Name}.{method.Name} cannot be a remote task: it is an instance method or a lambda that captures variables. " +
                    "Use a static method, a static local function or a lambda that captures nothing, and pass what it needs as arguments.", nameof(function));
            }
        }
        if (method.ContainsGenericParameters)
            throw new ArgumentException($"{method.Name} is an open generic method; give it concrete type arguments.", nameof(function));
        return s_cache.GetValue(method, Describe);
    }

    private static readonly ConditionalWeakTable<FunctionDescriptor, PackedFunction> s_packed = new();

    /// <summary>The descriptor as tasks and actor calls carry it: serialized once, with its key.</summary>
    public static PackedFunction Pack(FunctionDescriptor descriptor) => s_packed.GetValue(descriptor, static d =>
    {
        var bytes = Google.Protobuf.MessageExtensions.ToByteString(d);
        return new PackedFunction(bytes, System.IO.Hashing.XxHash64.HashToUInt64(bytes.Span));
    });

    /// <summary>Sets the function of a task or actor call in its packed form.</summary>
    public static void SetFunction(PushTaskRequest request, FunctionDescriptor descriptor)
    {
        var packed = Pack(descriptor);
        request.FunctionBytes = packed.Bytes;
        request.FunctionKey = packed.Key;
    }

    /// <summary>The function a request names, in whichever form it came.</summary>
    public static FunctionDescriptor Unpack(PushTaskRequest request) =>
        request.FunctionBytes.IsEmpty ? request.Function : FunctionDescriptor.Parser.ParseFrom(request.FunctionBytes);

    private static readonly ConcurrentDictionary<(ulong Key, string JobId), (MethodInfo, MethodInvoker, object?, Type[])> s_resolvedByKey = new();

    /// <summary>
    /// Worker side, per task: <see cref="Resolve"/> for the function a request names, found by its key (no parsing, no
    /// string built) once the first request with that key was resolved.
    /// </summary>
    public static (MethodInfo Method, MethodInvoker Invoker, object? Target, Type[] ParameterTypes) Resolve(PushTaskRequest request, Func<string, Assembly> loadAssembly)
    {
        if (request.FunctionKey != 0 && s_resolvedByKey.TryGetValue((request.FunctionKey, request.JobId), out var known)) return known;
        var resolved = Resolve(request.JobId, Unpack(request), loadAssembly);
        if (request.FunctionKey != 0) s_resolvedByKey.TryAdd((request.FunctionKey, request.JobId), resolved);
        return resolved;
    }

    private static FunctionDescriptor Describe(MethodInfo method)
    {
        var d = new FunctionDescriptor
        {
            Assembly = method.DeclaringType!.Assembly.GetName().Name!,
            DeclaringType = method.DeclaringType.FullName!,
            Method = method.Name,
            IsStatic = method.IsStatic,
        };
        d.ParameterTypes.Add(method.GetParameters().Select(p => p.ParameterType.FullName ?? p.ParameterType.Name));
        return d;
    }

    /// <summary>Worker side: finds the method a descriptor names in a job's code, with the object to call it on.</summary>
    /// <param name="ofActor">The descriptor names a method of an actor's class: it is called on the actor, so no target is looked up.</param>
    public static (MethodInfo Method, MethodInvoker Invoker, object? Target, Type[] ParameterTypes) Resolve(string jobId, FunctionDescriptor descriptor, Func<string, Assembly> loadAssembly, bool ofActor = false)
    {
        var key = (ofActor ? "actor|" : "") + jobId + "|" + descriptor.Assembly + "|" + descriptor.DeclaringType + "|" + descriptor.Method + "|" + string.Join(",", descriptor.ParameterTypes);
        return s_resolved.GetOrAdd(key, _ =>
        {
            var assembly = loadAssembly(descriptor.Assembly);
            var type = assembly.GetType(descriptor.DeclaringType, throwOnError: false)
                ?? throw new MissingMethodException($"type {descriptor.DeclaringType} is not in {descriptor.Assembly}");
            var method = type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance)
                .FirstOrDefault(m => m.Name == descriptor.Method
                    && m.GetParameters().Select(p => p.ParameterType.FullName ?? p.ParameterType.Name).SequenceEqual(descriptor.ParameterTypes))
                ?? throw new MissingMethodException($"{descriptor.DeclaringType}.{descriptor.Method}({string.Join(", ", descriptor.ParameterTypes)}) is not in {descriptor.Assembly}");
            object? target = null;
            if (!method.IsStatic && !ofActor)
                target = type.GetField("<>9", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)?.GetValue(null)
                    ?? throw new MissingMethodException($"{descriptor.Method} is an instance method without a closure singleton");
            return (method, MethodInvoker.Create(method), target, method.GetParameters().Select(p => p.ParameterType).ToArray());
        });
    }

    private static readonly ConcurrentDictionary<string, (MethodInfo, MethodInvoker, object?, Type[])> s_resolved = new(StringComparer.Ordinal);
}

/// <summary>A function descriptor serialized once, and the 64-bit hash of those bytes that workers cache it under.</summary>
internal sealed record PackedFunction(Google.Protobuf.ByteString Bytes, ulong Key);
