using System.Reflection;
using Google.Protobuf;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.Execution;

/// <summary>What tasks and actor calls share once user code returned: awaiting it, serializing it, reporting a failure.</summary>
internal static class TaskResults
{
    private static readonly ByteString s_null = ByteString.CopyFrom(ValueSerializer.Serialize<object?>(null));

    /// <summary>The serialized result of a call that returned <paramref name="result"/>; async results are awaited first.</summary>
    /// <remarks>A large result goes into this node's store; the task's submitter owns it once the reply reaches it.</remarks>
    public static async ValueTask<ByteString> SerializeAsync(Objects.LocalObjectStore store, object? result, Type returnType, string jobId)
    {
        switch (result)
        {
            case Task task:
                await task.ConfigureAwait(false);
                if (!returnType.IsGenericType) return s_null;
                returnType = returnType.GetGenericArguments()[0];
                result = ResultReader(returnType)(task);
                break;
            case ValueTask valueTask:
                await valueTask.ConfigureAwait(false);
                return s_null;
            default:
                if (returnType.IsGenericType && returnType.GetGenericTypeDefinition() == typeof(ValueTask<>))
                {
                    returnType = returnType.GetGenericArguments()[0];
                    var asTask = ValueTaskConverter(returnType)(result!);
                    await asTask.ConfigureAwait(false);
                    result = ResultReader(returnType)(asTask);
                }
                break;
        }
        return returnType == typeof(void) ? s_null : await store.SerializeAsync(returnType, result, jobId, owned: false).ConfigureAwait(false);
    }

    // Typed accessors made once per result type: no reflection per call.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Type, Func<Task, object?>> s_readers = new();
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Type, Func<object, Task>> s_converters = new();

    private static Func<Task, object?> ResultReader(Type resultType) => s_readers.GetOrAdd(resultType, t =>
        typeof(TaskResults).GetMethod(nameof(ReadResult), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(t).CreateDelegate<Func<Task, object?>>());

    private static Func<object, Task> ValueTaskConverter(Type resultType) => s_converters.GetOrAdd(resultType, t =>
        typeof(TaskResults).GetMethod(nameof(ToTask), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(t).CreateDelegate<Func<object, Task>>());

    private static object? ReadResult<T>(Task task) => ((Task<T>)task).Result;

    private static Task ToTask<T>(object valueTask) => ((ValueTask<T>)valueTask).AsTask();

    /// <summary>True when calls to a method return something to await (Ray's async methods).</summary>
    public static bool IsAsync(Type returnType) =>
        typeof(Task).IsAssignableFrom(returnType) || returnType == typeof(ValueTask)
        || (returnType.IsGenericType && returnType.GetGenericTypeDefinition() == typeof(ValueTask<>));

    public static PushTaskReply Failure(Exception e, CoreWorkerOptions options)
    {
        var error = e is TargetInvocationException { InnerException: { } inner } ? inner : e;
        var reply = new PushTaskReply
        {
            Error = new TaskError
            {
                ExceptionType = error.GetType().FullName ?? error.GetType().Name,
                Message = error.Message,
                StackTrace = error.StackTrace ?? "",
                NodeIpAddress = options.NodeIpAddress,
                WorkerId = options.WorkerId,
                Pid = Environment.ProcessId,
            },
        };
        for (var type = error.GetType(); type is not null && type != typeof(object); type = type.BaseType)
            reply.Error.ExceptionTypes.Add(type.FullName ?? type.Name);
        return reply;
    }
}
